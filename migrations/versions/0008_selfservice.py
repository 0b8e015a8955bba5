"""self-service: one-time codes, consent version, certificate attachments, reports,
the access log, retention watermarks, BRIN indexes for the retention job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 07:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BRIN_TABLES = ("audit_log", "message", "selection_record", "incident_event")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("volunteer", sa.Column("consent_version", sa.String(length=50), nullable=True))
    op.add_column("web_session", sa.Column("volunteer_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_web_session_volunteer_id_volunteer"),
        "web_session",
        "volunteer",
        ["volunteer_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_web_session_volunteer_id", "web_session", ["volunteer_id"])
    op.create_check_constraint(
        op.f("ck_web_session_one_subject"),
        "web_session",
        "(staff_user_id IS NULL) <> (volunteer_id IS NULL)",
    )
    op.add_column(
        "rate_limit_bucket",
        sa.Column("window_s", sa.Integer(), server_default=sa.text("60"), nullable=False),
    )
    for table in BRIN_TABLES:
        op.create_index(
            f"ix_{table}_created_at_brin", table, ["created_at"], postgresql_using="brin"
        )
    op.create_table(
        "one_time_code",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("purpose", sa.String(length=10), nullable=False),
        sa.Column("volunteer_id", sa.UUID(), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("signup", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        _timestamp("used_at", nullable=True),
        _timestamp("superseded_at", nullable=True),
        sa.CheckConstraint(
            "purpose IN ('signup', 'login')", name=op.f("ck_one_time_code_purpose_known")
        ),
        sa.ForeignKeyConstraint(
            ["volunteer_id"],
            ["volunteer.id"],
            name=op.f("fk_one_time_code_volunteer_id_volunteer"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_code")),
    )
    op.create_index("ix_one_time_code_phone_created_at", "one_time_code", ["phone", "created_at"])
    op.create_table(
        "certification_attachment",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("certification_id", sa.UUID(), nullable=False),
        sa.Column("media_type", sa.String(length=50), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        _timestamp("created_at"),
        sa.ForeignKeyConstraint(
            ["certification_id"],
            ["certification.id"],
            name=op.f("fk_certification_attachment_certification_id_certification"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certification_attachment")),
        sa.UniqueConstraint(
            "certification_id", name=op.f("uq_certification_attachment_certification_id")
        ),
    )
    op.create_table(
        "alert_report",
        sa.Column("alert_id", sa.UUID(), nullable=False),
        sa.Column("gave_cpr", sa.Boolean(), nullable=True),
        sa.Column("aed_used", sa.Boolean(), nullable=True),
        sa.Column("arrived_before_ems", sa.Boolean(), nullable=True),
        sa.Column("wants_contact", sa.Boolean(), nullable=False),
        _timestamp("submitted_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
            name=op.f("fk_alert_report_alert_id_alert"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert_report")),
    )
    op.create_table(
        "access_log",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reader", sa.String(length=100), nullable=False),
        sa.Column("volunteer_id", sa.UUID(), nullable=False),
        sa.Column("what", sa.String(length=30), nullable=False),
        sa.Column("target_id", sa.String(length=100), nullable=False),
        sa.Column("reader_name", sa.String(length=200), nullable=False),
        _timestamp("first_at"),
        sa.PrimaryKeyConstraint(
            "day", "reader", "volunteer_id", "what", "target_id", name=op.f("pk_access_log")
        ),
    )
    op.create_index("ix_access_log_volunteer_id", "access_log", ["volunteer_id"])
    op.create_index(
        "ix_access_log_first_at_brin", "access_log", ["first_at"], postgresql_using="brin"
    )
    op.create_table(
        "retention_run",
        sa.Column("rule", sa.String(length=50), nullable=False),
        _timestamp("purged_before"),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_retention_run")),
    )


def downgrade() -> None:
    op.drop_table("retention_run")
    op.drop_index("ix_access_log_first_at_brin", table_name="access_log")
    op.drop_index("ix_access_log_volunteer_id", table_name="access_log")
    op.drop_table("access_log")
    op.drop_table("alert_report")
    op.drop_table("certification_attachment")
    op.drop_index("ix_one_time_code_phone_created_at", table_name="one_time_code")
    op.drop_table("one_time_code")
    for table in BRIN_TABLES:
        op.drop_index(f"ix_{table}_created_at_brin", table_name=table)
    op.drop_column("rate_limit_bucket", "window_s")
    op.drop_constraint(op.f("ck_web_session_one_subject"), "web_session", type_="check")
    op.drop_index("ix_web_session_volunteer_id", table_name="web_session")
    op.drop_column("web_session", "volunteer_id")
    op.drop_column("volunteer", "consent_version")
