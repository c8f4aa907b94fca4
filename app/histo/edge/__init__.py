"""The public edge of a master: tokens (Vault transit), rate limits, the audit log, the event bus,
aiohttp middlewares and the OpenAPI document."""
