"""FlowForge wire protocol: messages, stored documents, subjects, limits and error codes (no I/O)."""

PROTOCOL_VERSION = 1
