"""touches: a digest of what was sent, for reconciling ambiguous sends with the provider

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches') as batch_op:
        batch_op.add_column(sa.Column('body_digest', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_touches_enrollment', ['enrollment_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('touches') as batch_op:
        batch_op.drop_index('ix_touches_enrollment')
        batch_op.drop_column('body_digest')
