"""Reports: KPIs, SLA, A/B results and ratings from the ledger and events."""
