"""SIP user agent: a sans-IO core (messages, SDP, digest auth, transactions, dialogs)
with thin trio transports. See DESIGN.md. Nothing here imports ``t38gw``."""
