"""One module per stage verb: resolve, quantize, export, build, verify, publish."""
