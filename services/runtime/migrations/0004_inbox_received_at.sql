-- Inbox rows are kept for AIRLINE_INBOX_RETENTION, then pruned oldest first in
-- small batches (services/runtime/src/prune.rs): this index finds them.
--
-- Built in the migration's transaction, which blocks inserts into the inbox while
-- it runs: instant on a new or small inbox. On a deployment whose inbox has grown
-- large, create it by hand before upgrading, which makes this a no-op:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_received_at ON messaging.inbox (received_at);
CREATE INDEX IF NOT EXISTS inbox_received_at ON messaging.inbox (received_at);
