"""touches.delivery_at and the indexes `outreach report` reads by

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches') as batch_op:
        batch_op.add_column(sa.Column('delivery_at', sa.DateTime(timezone=True), nullable=True))
    # A sent touch reached the candidate at the later of the send and the planned instant
    # (a provider held a scheduled one until then).
    later = 'MAX' if op.get_bind().dialect.name == 'sqlite' else 'GREATEST'
    op.execute(
        f"UPDATE touches SET delivery_at = {later}(sent_at, planned_at) "
        "WHERE status = 'sent' AND sent_at IS NOT NULL"
    )
    with op.batch_alter_table('touches') as batch_op:
        # Covering for the report's scan of a window's sent touches (no table lookups).
        batch_op.create_index(
            'ix_touches_delivery',
            [
                'delivery_at', 'status', 'person_id', 'enrollment_id', 'cadence_id', 'step_id',
                'channel', 'variant', 'id',
            ],
            unique=False,
        )
        batch_op.create_index(
            'ix_touches_person_delivery', ['person_id', 'delivery_at'], unique=False
        )
        batch_op.create_index(
            'ix_touches_step_due', ['cadence_id', 'step_id', 'due_at'], unique=False
        )
    with op.batch_alter_table('events') as batch_op:
        batch_op.create_index('ix_events_type_at', ['type', 'at', 'person_id'], unique=False)
        batch_op.create_index('ix_events_touch_type', ['touch_id', 'type'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events') as batch_op:
        batch_op.drop_index('ix_events_touch_type')
        batch_op.drop_index('ix_events_type_at')
    with op.batch_alter_table('touches') as batch_op:
        batch_op.drop_index('ix_touches_step_due')
        batch_op.drop_index('ix_touches_person_delivery')
        batch_op.drop_index('ix_touches_delivery')
        batch_op.drop_column('delivery_at')
