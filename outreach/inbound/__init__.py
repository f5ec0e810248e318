"""Mail that comes back: replies, out-of-office notices, bounces and unsubscribes.

Three ways in (SendGrid Inbound Parse, ``replies import`` of files, ``replies poll`` of an
IMAP mailbox) produce :class:`~outreach.inbound.raw.RawMessage` items; ``intake`` parses,
classifies, matches and stores them and turns them into the engine's events.
"""
