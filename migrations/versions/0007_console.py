"""Staff console: staff users, browser sessions, failed sign-ins, the person in the audit log

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "staff_user",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("centre", sa.String(200), nullable=True),
        sa.Column("language", sa.String(2), nullable=True),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("password_token_hash", sa.String(64), nullable=True),
        sa.Column("password_token_expires_at", TIMESTAMP, nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_enabled_at", TIMESTAMP, nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.Column("last_login_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "role IN ('coordinator', 'dispatcher')", name=op.f("ck_staff_user_role_known")
        ),
        sa.CheckConstraint(
            "role <> 'dispatcher' OR centre IS NOT NULL",
            name=op.f("ck_staff_user_dispatcher_centre"),
        ),
        sa.CheckConstraint(
            "language IS NULL OR language IN ('sv', 'en')",
            name=op.f("ck_staff_user_language_known"),
        ),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_staff_user_email_lowercase")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_user")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_user_email")),
        sa.UniqueConstraint("password_token_hash", name=op.f("uq_staff_user_password_token_hash")),
    )
    op.create_table(
        "web_session",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("staff_user_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column(
            "second_factor_pending", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_user_id"],
            ["staff_user.id"],
            name=op.f("fk_web_session_staff_user_id_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_session")),
    )
    op.create_index("ix_web_session_staff_user_id", "web_session", ["staff_user_id"])
    op.create_table(
        "login_failure",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("failed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failure")),
    )
    op.create_index("ix_login_failure_email_failed_at", "login_failure", ["email", "failed_at"])
    op.create_index("ix_login_failure_ip_failed_at", "login_failure", ["ip", "failed_at"])
    op.add_column(
        "audit_log", sa.Column("actor_user_id", postgresql.UUID(as_uuid=True), nullable=True)
    )
    op.create_index("ix_audit_log_actor_user_id", "audit_log", ["actor_user_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_actor_user_id", table_name="audit_log")
    op.drop_column("audit_log", "actor_user_id")
    op.drop_table("login_failure")
    op.drop_table("web_session")
    op.drop_table("staff_user")
