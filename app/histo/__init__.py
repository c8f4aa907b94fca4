"""histo: a secured, distributed image-histogram equalization cluster."""

TRUST_DOMAIN = "histo.internal"
