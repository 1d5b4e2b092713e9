"""What every feature of the bot stands on; imports no feature module."""
