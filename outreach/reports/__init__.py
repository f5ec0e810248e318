"""``outreach report``: KPIs, SLA per step, A/B results and candidate ratings from the ledger."""
