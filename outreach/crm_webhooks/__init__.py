"""CRM stage changes pushed to the engine: Greenhouse, Lever and HubSpot webhooks.

One module per CRM verifies and reads its deliveries into :class:`~.change.CrmChange`
items (:mod:`.greenhouse`, :mod:`.lever`, :mod:`.hubspot`); :mod:`.apply` writes them
through the same normaliser and upsert a sync uses, so the next sync of the same change
does nothing twice; :mod:`.receiver` is the HTTP side that ``outreach serve`` mounts.
"""

from __future__ import annotations

from outreach.crm_webhooks.apply import ApplyReport, apply_changes
from outreach.crm_webhooks.change import BadPayload, CrmChange

__all__ = ["ApplyReport", "BadPayload", "CrmChange", "apply_changes"]
