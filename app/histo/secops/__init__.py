"""SecOps collector side: the tamper-evident record (hash chain + signed checkpoints) and its verifier."""
