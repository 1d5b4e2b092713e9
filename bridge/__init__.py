"""The counseling bot: intake, matching, session rooms, lifecycle."""
