"""The on-device page: the same packages run in the visitor's browser with ONNX Runtime Web; the photo is never sent.

`static/` holds the page (plain ES modules) and the vendored runtime (scripts/vendor_onnxruntime_web.sh);
`site` describes what the page loads (manifest.json, the model files); `server.mount_on_device` serves it at
/on-device/ beside the Gradio app; `build` writes it as a static folder (`python -m skin_demo.web build OUT`).
"""
