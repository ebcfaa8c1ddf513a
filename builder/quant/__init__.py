"""Quantization: ModelOpt's config for a format (config), calibration text (data), calibration with trtq's own steps
(calibrate, smoothing, clipping), the calibrated state kept for later exports (state), and the corrections trtq
makes to ModelOpt's export (modelopt_fixes)."""
