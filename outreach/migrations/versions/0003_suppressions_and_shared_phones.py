"""suppression list, consent with source and time, shared phones

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Contact points become unique per person (a phone may belong to two people); every
suppressed contact point and every global opt-out's email addresses are copied into the
new suppression list, so they hold for whoever has those addresses from now on.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "value", "scope", name="uq_suppressions_address_scope"),
    )
    with op.batch_alter_table("candidate_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sms_consent", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("sms_consent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_candidate_records_phone", ["phone"], unique=False)

    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consent_source", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.drop_constraint("uq_contact_points_kind_value", type_="unique")
        batch_op.create_unique_constraint(
            "uq_contact_points_person_kind_value", ["person_id", "kind", "value"]
        )
        batch_op.create_index("ix_contact_points_kind_value", ["kind", "value"], unique=False)
    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.alter_column("shared", server_default=None)

    # Consent stored so far has no known source; its time is the point's last change.
    op.execute("UPDATE contact_points SET consent_at = updated_at WHERE sms_consent IS NOT NULL")
    # What was suppressed stays suppressed, now by address: an email opt-out or
    # unsubscribe covers the person's every email address, a bounce only its own.
    op.get_bind().execute(
        sa.text(
            "INSERT INTO suppressions (kind, value, scope, reason, source, at, created_at) "
            "SELECT kind, value, "
            "CASE WHEN kind = 'email' AND COALESCE(suppressed_reason, '') NOT LIKE '%bounce%' "
            "THEN 'channel' ELSE 'address' END, "
            "COALESCE(suppressed_reason, 'suppressed'), 'migration 0003', "
            "COALESCE(suppressed_at, updated_at), updated_at "
            "FROM contact_points WHERE suppressed = :yes"
        ),
        {"yes": True},
    )
    op.get_bind().execute(
        sa.text(
            "INSERT INTO suppressions (kind, value, scope, reason, source, at, created_at) "
            "SELECT c.kind, c.value, 'all', 'opted out', 'migration 0003', "
            "COALESCE(p.opted_out_at, p.updated_at), p.updated_at "
            "FROM contact_points c JOIN people p ON p.id = c.person_id "
            "WHERE p.global_opt_out = :yes AND c.kind = 'email'"
        ),
        {"yes": True},
    )


def downgrade() -> None:
    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_points_kind_value")
        batch_op.drop_constraint("uq_contact_points_person_kind_value", type_="unique")
        batch_op.create_unique_constraint("uq_contact_points_kind_value", ["kind", "value"])
        batch_op.drop_column("shared")
        batch_op.drop_column("consent_at")
        batch_op.drop_column("consent_source")

    with op.batch_alter_table("candidate_records", schema=None) as batch_op:
        batch_op.drop_index("ix_candidate_records_phone")
        batch_op.drop_column("sms_consent_at")
        batch_op.drop_column("sms_consent")

    op.drop_table("suppressions")
