"""Shared test data: the acceptance walkthrough's ten import rows, two of them bad."""

from __future__ import annotations

HEADER = (
    "source,external_id,first_name,last_name,email,phone,linkedin_url,timezone,stage,"
    "stage_entered_at,job_title,recruiter_name,recruiter_email,owner_id,sms_consent,"
    "preferred_channel,highlight\n"
)

ROWS = [
    "import,c1,Ann,Lee,ann@example.com,(212) 555-0101,,America/New_York,applied,2026-11-20T09:00:00-05:00,Data Engineer,Jo Smith,jo@example.com,rec-1,true,email,the Spark talk",
    "import,c2,Ben,Ode,ben@example.com,,,,screening,,Designer,Jo Smith,jo@example.com,rec-1,,,",
    "import,c3,Cat,Ng,cat@example,,,,applied,,Designer,Jo Smith,jo@example.com,rec-1,,,",  # bad email
    "import,c4,Dan,Ito,dan@example.com,+1 415 555 0104,https://linkedin.com/in/dan-ito,,interview,,SRE,Jo Smith,jo@example.com,rec-1,no,sms,",
    "import,c5,Eve,Ra,eve@example.com,,,,offer,,SRE,Jo Smith,jo@example.com,rec-1,,,",
    "import,c6,Fay,Su,fay@example.com,,,Mars/Base,applied,,SRE,Jo Smith,jo@example.com,rec-1,,,",  # bad zone
    "import,c7,Gus,Li,gus@example.com,,,,prospect,,SRE,Jo Smith,jo@example.com,rec-1,,,",
    "import,c8,Hal,Po,hal@example.com,,,,hired,,SRE,Jo Smith,jo@example.com,rec-1,,,",
    "import,c9,Ivy,Qu,ivy@example.com,,,,rejected,,SRE,Jo Smith,jo@example.com,rec-1,,,",
    "import,c10,Jon,Wu,jon@example.com,,,,applied,,SRE,Jo Smith,jo@example.com,rec-1,,,",
]

TEN_ROWS_TWO_BAD = HEADER + "\n".join(ROWS) + "\n"
