"""The SQL of the SQLite store: its tables, and the statements sqlite_store.py runs."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    last_used REAL NOT NULL,     -- clock seconds, for idle expiry
    touched INTEGER NOT NULL,    -- a use counter: the exact LRU order, even within a clock tick
    token_ratio REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_by_last_used ON conversations (last_used);
CREATE INDEX IF NOT EXISTS conversations_by_touched ON conversations (touched);

CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS holds (
    conversation_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_until ON holds (until);

-- count(*) reads the whole table; the LRU cap needs the count on every new conversation.
CREATE TABLE IF NOT EXISTS tally (conversations INTEGER NOT NULL);
INSERT INTO tally SELECT 0 WHERE NOT EXISTS (SELECT * FROM tally);
CREATE TRIGGER IF NOT EXISTS tally_insert AFTER INSERT ON conversations
BEGIN UPDATE tally SET conversations = conversations + 1; END;
CREATE TRIGGER IF NOT EXISTS tally_delete AFTER DELETE ON conversations
BEGIN UPDATE tally SET conversations = conversations - 1; END;
"""

SAVE_CONVERSATION = """
INSERT INTO conversations (id, last_used, touched, token_ratio)
VALUES (:id, :now, (SELECT coalesce(max(touched), 0) + 1 FROM conversations), :ratio)
ON CONFLICT (id) DO UPDATE SET
    last_used = excluded.last_used,
    touched = excluded.touched,
    token_ratio = coalesce(excluded.token_ratio, token_ratio)
"""
DROP_LEAST_RECENT = """
DELETE FROM conversations WHERE id IN (
    SELECT id FROM conversations ORDER BY touched
    LIMIT max(0, (SELECT conversations FROM tally) - :max)
)
"""
TOUCH = """
UPDATE conversations
SET last_used = :now, touched = (SELECT max(touched) + 1 FROM conversations)
WHERE id = :id AND last_used >= :oldest
RETURNING token_ratio
"""
TRANSCRIPT = """
SELECT m.role, m.content, m.at FROM messages AS m JOIN conversations AS c
ON c.id = m.conversation_id
WHERE c.id = :id AND c.last_used >= :oldest ORDER BY m.seq
"""
# The conversations of one namespace: keys that are the namespace and then an id without
# a "/". Every message is read once, and the store holds at most MEMORY_MAX_CONVERSATIONS
# conversations of MEMORY_MAX_TURNS messages each, so the cost stays bounded.
LIST = """
SELECT substr(c.id, length(:namespace) + 1), count(*), max(m.at), (
    SELECT f.content FROM messages AS f
    WHERE f.conversation_id = c.id AND f.role = 'user' ORDER BY f.seq LIMIT 1
)
FROM conversations AS c JOIN messages AS m ON m.conversation_id = c.id
WHERE c.last_used >= :oldest
    AND substr(c.id, 1, length(:namespace)) = :namespace
    AND instr(substr(c.id, length(:namespace) + 1), '/') = 0
GROUP BY c.id
ORDER BY max(m.at) DESC, c.touched DESC
LIMIT :limit
"""
HOLD = """
INSERT INTO holds (conversation_id, holder, until) VALUES (:id, :holder, :until)
ON CONFLICT (conversation_id) DO UPDATE SET holder = excluded.holder, until = excluded.until
WHERE holds.until <= :now
"""
# A lapsed claim is not renewed, even before anyone takes it: renewing it would hide
# that another request could have begun meanwhile (and Redis forgets it anyway).
RENEW = """
UPDATE holds SET until = :until
WHERE conversation_id = :id AND holder = :holder AND until > :now
"""
