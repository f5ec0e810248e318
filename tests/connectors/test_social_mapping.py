"""Each CRM's X and Facebook profile, where it keeps one, handed over as ``x_url`` /
``facebook_url`` and normalised; a link that is not a profile is dropped with a warning."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.activecampaign_records import field_key
from connectors.activecampaign_records import flatten_contact as flatten_ac_contact
from connectors.bullhorn_records import flatten_candidate as flatten_bullhorn
from connectors.greenhouse import flatten_candidate as flatten_greenhouse
from connectors.hubspot import flatten_contact as flatten_hubspot
from connectors.lever import flatten_opportunity
from outreach.cadence import load_cadence_file
from outreach.paths import default_config_dir
from outreach.records import CandidateIn, normalize_record

FIXTURES = Path(__file__).parent.parent / "fixtures"
CONFIG = load_cadence_file(default_config_dir() / "cadences.yaml")


def normalised(raw: dict) -> CandidateIn:
    return normalize_record(
        raw,
        where=f"{raw['source']} {raw['external_id']}",
        default_region="US",
        canonical_stage=CONFIG.canonical_stage,
        strict_contacts=False,
    )


def test_greenhouse_social_media_addresses_give_the_x_and_facebook_profiles() -> None:
    raw = json.loads((FIXTURES / "greenhouse" / "v1_candidate_retrieve.json").read_text())
    # The documented candidate lists "twitter.com/test" among its social media addresses.
    documented = normalised(flatten_greenhouse(raw))
    assert documented.x_url == "https://x.com/test" and documented.facebook_url is None
    raw["social_media_addresses"] = [
        {"value": "https://www.linkedin.com/in/jane"},
        {"value": "https://netflix.com/jane"},
        {"value": "https://www.facebook.com/jane.doe"},
    ]
    raw["website_addresses"] = [{"value": "https://x.com/JaneDoe", "type": "personal"}]
    record = normalised(flatten_greenhouse(raw))
    assert record.x_url == "https://x.com/janedoe"
    assert record.facebook_url == "https://www.facebook.com/jane.doe"
    assert record.linkedin_url == "https://www.linkedin.com/in/jane"


def lever_opportunity(links: list) -> dict:
    return {
        "id": "o1",
        "name": "Ada Lovelace",
        "emails": ["ada@example.com"],
        "links": links,
        "stage": {"text": "Phone screen"},
        "createdAt": 1407460071043,
        "updatedAt": 1407460080000,
    }


def test_lever_links_give_the_profiles_and_a_bad_one_is_a_warning() -> None:
    record = normalised(
        flatten_opportunity(
            lever_opportunity(
                ["https://github.com/ada", "twitter.com/ada_l", "https://fb.com/ada.lovelace"]
            ),
            {},
        )
    )
    assert record.x_url == "https://x.com/ada_l"
    assert record.facebook_url == "https://www.facebook.com/ada.lovelace"
    # A page of the site, not a profile: dropped, the record kept (its email remains).
    odd = normalised(flatten_opportunity(lever_opportunity(["https://x.com/home"]), {}))
    assert odd.x_url is None and odd.email == "ada@example.com"
    assert odd.warnings and odd.warnings[0].startswith("x_url is not an X profile")


def test_hubspot_twitter_username_and_custom_profile_properties() -> None:
    base = {"firstname": "Ada", "email": "ada@example.com"}
    bare = flatten_hubspot({"id": "1", "properties": {**base, "twitterhandle": "Ada_Codes"}})
    assert normalised(bare).x_url == "https://x.com/ada_codes"
    custom = flatten_hubspot(
        {
            "id": "2",
            "properties": {
                **base,
                "twitterhandle": "@someone_else",
                "x_url": "https://twitter.com/ada_x",
                "facebook_url": "facebook.com/ada.lovelace",
            },
        }
    )
    record = normalised(custom)
    assert record.x_url == "https://x.com/ada_x"  # the profile URL wins over the handle
    assert record.facebook_url == "https://www.facebook.com/ada.lovelace"
    assert "twitterhandle" not in record.custom  # consumed, not a custom field
    plain = normalised(flatten_hubspot({"id": "3", "properties": base}))
    assert plain.x_url is None and plain.facebook_url is None


def test_bullhorn_custom_text_fields_holding_profile_urls() -> None:
    first, _ = json.loads((FIXTURES / "bullhorn" / "query_candidate.json").read_text())["data"]
    raw = {
        **first,
        "customText2": "https://x.com/alanzo_s",
        "customText3": "https://www.facebook.com/alanzo.smith",
    }
    record = normalised(flatten_bullhorn(raw, []))
    assert record.x_url == "https://x.com/alanzo_s"
    assert record.facebook_url == "https://www.facebook.com/alanzo.smith"
    assert record.linkedin_url == "https://www.linkedin.com/in/alanzo-smith"


def test_activecampaign_fields_by_personalisation_tag_and_alias() -> None:
    contact = {"id": "3", "email": "ada@example.com", "firstName": "Ada"}
    values = [
        {"contact": "3", "field": "1", "value": "@ada_ac"},
        {"contact": "3", "field": "2", "value": "https://m.facebook.com/ada.lovelace"},
    ]
    for tags in (("X_URL", "FACEBOOK_URL"), ("TWITTER", "FACEBOOK"), ("Twitter URL", "Facebook")):
        fields = [{"id": str(i), "perstag": tag} for i, tag in enumerate(tags, start=1)]
        names = {f["id"]: field_key(f) for f in fields}
        record = normalised(flatten_ac_contact(contact, field_values=values, field_names=names))
        assert record.x_url == "https://x.com/ada_ac"
        assert record.facebook_url == "https://www.facebook.com/ada.lovelace"
