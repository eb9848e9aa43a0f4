"""Compatibility: the audit folder is read by :mod:`audit.folder` (import from there)."""
from audit.folder import (ERROR_AUDIT_JSON_CORRUPT, ERROR_AUDIT_JSON_SCHEMA, ERROR_NO_AUDIT_JSON,  # noqa: F401
                          ERROR_NO_TABLE, ERROR_NOT_A_FOLDER, ERROR_TABLE_COLUMNS, ERROR_TABLE_CORRUPT,
                          ERROR_TABLE_ROWS, GROUP_METRIC_COLUMNS, IMAGE_COLUMNS, NOTE_REVIEWS_UNREADABLE,
                          REVIEW_DECISIONS, AuditFolder, load_audit_folder, load_audit_json, load_group_metrics,
                          load_images, load_reviews)
