"""social_profiles: X and Facebook profile URLs on candidate records

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable and without a default: adding them rewrites no rows. Their contact
    # points (kinds 'x' and 'facebook') need no change: contact_points.kind is free text.
    with op.batch_alter_table('candidate_records') as batch:
        batch.add_column(sa.Column('x_url', sa.String(length=500), nullable=True))
        batch.add_column(sa.Column('facebook_url', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('candidate_records') as batch:
        batch.drop_column('facebook_url')
        batch.drop_column('x_url')
