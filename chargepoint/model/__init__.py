"""The domain: connectors, sessions, transactions, metering, authorization, reservations,
smart charging, availability, the durable outbox, boot, and the clock that converts CSMS
time and local time. One service per concern, each built with what it uses by
`services.build_services`; nothing here imports the station, the handlers or the protocol
(docs/architecture.md)."""
