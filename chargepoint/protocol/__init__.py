"""OCPP-J without I/O: framing and schemas (`ocppj`), our queue of CALLs (`calls`), the RPC
endpoint that pairs requests with answers (`rpc`), what may be answered in each
registration state (`registration`), and what of a frame may be logged (`redaction`).

Nothing here knows the charger: it reads text frames in and hands text frames out.
"""
