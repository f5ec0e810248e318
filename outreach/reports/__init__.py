"""``outreach report``: KPIs, SLA per step, A/B results and ratings from the ledger and events."""
