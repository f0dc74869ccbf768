"""mailer: sends the timed emails around an event, exactly once, through crashes and edits."""
