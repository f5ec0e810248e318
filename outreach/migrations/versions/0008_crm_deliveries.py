"""crm_deliveries: CRM webhook events already taken in (idempotency across restarts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'crm_deliveries',
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('delivery_id', sa.String(length=200), nullable=False),
        sa.Column('external_id', sa.String(length=128), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', 'delivery_id'),
    )


def downgrade() -> None:
    op.drop_table('crm_deliveries')
