"""drop two indexes that are prefixes of others

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

``ix_touches_status (status)`` leads ``ix_touches_status_planned (status, planned_at)``
and ``ix_contact_points_person (person_id)`` leads ``uq_contact_points_person_kind_value
(person_id, kind, value)``: every lookup either served is served as well by the longer
one, and each cost a write per touch status change or per contact point stored.
"""
from __future__ import annotations

from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_touches_status', table_name='touches')
    op.drop_index('ix_contact_points_person', table_name='contact_points')


def downgrade() -> None:
    op.create_index('ix_contact_points_person', 'contact_points', ['person_id'], unique=False)
    op.create_index('ix_touches_status', 'touches', ['status'], unique=False)
