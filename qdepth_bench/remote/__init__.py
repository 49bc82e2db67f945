"""Policies over the network: an openpi-compatible websocket server for any registered policy, and the
wire format both directions share."""
