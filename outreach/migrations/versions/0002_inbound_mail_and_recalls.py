"""inbound mail, mailbox cursors, recalls, pauses

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inbound_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('message_id', sa.String(length=250), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('out_of_office', sa.Boolean(), nullable=False),
    sa.Column('rule', sa.Text(), nullable=True),
    sa.Column('from_address', sa.String(length=500), nullable=True),
    sa.Column('subject', sa.String(length=500), nullable=True),
    sa.Column('new_text', sa.Text(), nullable=True),
    sa.Column('returns_on', sa.Date(), nullable=True),
    sa.Column('bounce_status', sa.String(length=16), nullable=True),
    sa.Column('matched_by', sa.String(length=16), nullable=True),
    sa.Column('person_id', sa.Integer(), nullable=True),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('contact_point_id', sa.Integer(), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_point_id'], ['contact_points.id'], ),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key', name='uq_inbound_messages_dedupe_key')
    )
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_messages_kind_time', ['kind', 'received_at'], unique=False)
        batch_op.create_index('ix_inbound_messages_person', ['person_id'], unique=False)

    op.create_table('mailbox_state',
    sa.Column('mailbox', sa.String(length=500), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mailbox')
    )
    op.create_table('recalls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=200), nullable=False),
    sa.Column('send_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('why', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('touch_id', name='uq_recalls_touch')
    )
    with op.batch_alter_table('recalls', schema=None) as batch_op:
        batch_op.create_index('ix_recalls_due', ['status', 'next_attempt_at'], unique=False)

    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pause_reason', sa.Text(), nullable=True))

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_id', sa.String(length=250), nullable=True))
        batch_op.add_column(sa.Column('reply_token', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('recall_ref', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_touches_reply_token', ['reply_token'], unique=False)
        batch_op.create_index('ix_touches_message_id', ['message_id'], unique=False)
        batch_op.create_index('ix_touches_status_planned', ['status', 'planned_at'], unique=False)

    with op.batch_alter_table('write_backs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inbound_id', sa.Integer(), nullable=True))
        batch_op.alter_column('touch_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(
            'fk_write_backs_inbound_id', 'inbound_messages', ['inbound_id'], ['id']
        )
        batch_op.create_unique_constraint('uq_write_backs_inbound_kind', ['inbound_id', 'kind'])


def downgrade() -> None:
    with op.batch_alter_table('write_backs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_write_backs_inbound_kind', type_='unique')
        batch_op.drop_constraint('fk_write_backs_inbound_id', type_='foreignkey')
        batch_op.alter_column('touch_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('inbound_id')

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_status_planned')
        batch_op.drop_index('ix_touches_message_id')
        batch_op.drop_index('ix_touches_reply_token')
        batch_op.drop_column('recall_ref')
        batch_op.drop_column('reply_token')
        batch_op.drop_column('message_id')

    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('pause_reason')
        batch_op.drop_column('paused_until')

    with op.batch_alter_table('recalls', schema=None) as batch_op:
        batch_op.drop_index('ix_recalls_due')
    op.drop_table('recalls')
    op.drop_table('mailbox_state')
    with op.batch_alter_table('inbound_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_messages_person')
        batch_op.drop_index('ix_inbound_messages_kind_time')
    op.drop_table('inbound_messages')
