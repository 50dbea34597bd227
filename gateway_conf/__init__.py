"""The API gateway's nginx configuration: templates and the renderer (``python -m gateway_conf.render``)."""
