"""touches.rating_token: the secret of a touch's one-click rating links

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches') as batch_op:
        batch_op.add_column(sa.Column('rating_token', sa.String(length=40), nullable=True))
        batch_op.create_index('ix_touches_rating_token', ['rating_token'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('touches') as batch_op:
        batch_op.drop_index('ix_touches_rating_token')
        batch_op.drop_column('rating_token')
