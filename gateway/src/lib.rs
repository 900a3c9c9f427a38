//! edge-gateway: the TLS-terminating, CIDR-filtering reverse proxy in front of the Flask app.
