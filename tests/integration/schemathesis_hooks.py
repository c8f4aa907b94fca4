"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests/integration/schemathesis_hooks.py): without them no
generated upload is ever an image, so every POST /api/v1/jobs answers 415 and the stateful phase never
reaches a job (get, wait, result, histogram, receipt, delete). Three in four of the schema-valid upload
bodies Schemathesis generates get a real small PNG or JPEG as their `image`; the others keep the random
bytes (answered 415 or 400, as documented). A body that is not schema-valid is left exactly as generated,
so negative cases stay negative."""
from __future__ import annotations

import dataclasses
from typing import Any

import schemathesis

from histo.compute.equalize import MODES
from histo.testing.cluster import sample_image

IMAGES = (sample_image(24, 16, "PNG"), sample_image(20, 18, "JPEG"))


@schemathesis.hook
def map_body(ctx: schemathesis.HookContext, body: Any) -> Any:
    op = ctx.operation
    if op is None or op.method.upper() != "POST" or op.path != "/api/v1/jobs":
        return body
    form = body.body if dataclasses.is_dataclass(body) and hasattr(body, "body") else body  # a multipart form
    if not isinstance(form, dict) or not set(form) <= {"image", "mode"} or form.get("mode", "luma") not in MODES:
        return body
    image = form.get("image")
    if not isinstance(image, (str, bytes)) or not image:
        return body
    pick = len(image) % 4
    if pick == 3:
        return body
    form = {**form, "image": IMAGES[pick % 2]}
    return form if isinstance(body, dict) else dataclasses.replace(body, body=form)
