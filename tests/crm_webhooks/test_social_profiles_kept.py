"""A CRM webhook rebuilds a stored record from its columns: X and Facebook profiles stay."""

from __future__ import annotations

import json
from datetime import timedelta

from crm_hook_posts import PUBLIC, hubspot_event, hubspot_headers
from crm_world import NOW, record

PATH = "/webhooks/hubspot"


def test_a_pushed_stage_change_keeps_the_stored_x_profile(client, store, sandbox) -> None:
    person = next(
        p
        for p in sandbox.in_crm("hubspot")
        if p.crms == ("hubspot",) and p.stage in ("prospect", "applied") and p.x_handle
    )
    contact_id = sandbox.hubspot.contact_id(person.index)
    before = record(store, "hubspot", contact_id)
    assert before.x_url == f"https://x.com/{person.x_handle}"
    at = NOW - timedelta(minutes=3)
    sandbox.hubspot.move(person.index, "screening", at)
    body = json.dumps([hubspot_event(2001, contact_id, "opportunity", at)]).encode()
    answer = client.post(PATH, data=body, headers=hubspot_headers(body, NOW, PUBLIC + PATH))
    assert answer.status_code == 200 and answer.json["applied"] == 1, answer.text
    after = record(store, "hubspot", contact_id)
    assert after.stage == "screening"
    assert after.x_url == before.x_url  # carried over, not blanked by a stage-only event
