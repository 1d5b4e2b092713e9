"""The crisis commands: a client's ``urgent`` and the paged people's ``!take``."""

from __future__ import annotations

from bridge.features.crisis.handover import cmd_take
from bridge.features.crisis.protocol import crisis_protocol
from bridge.kernel.commands import CLIENT, COUNSELOR, SUPERVISOR, CommandEvent, Commands

commands = Commands()


@commands.command(CLIENT, "urgent", always=True)
async def urgent(ev: CommandEvent) -> None:
    """Crisis help at once and a page to the on-call team, at any step, mid-intake too."""
    await crisis_protocol(
        ev.ctx, ev.fx, ev.the_client(), "command:urgent", reply_room=ev.reply_room, remember=True
    )
    ev.say("urgent.ack")


@commands.command(COUNSELOR, "take")
@commands.command(SUPERVISOR, "take")
async def take(ev: CommandEvent) -> None:
    """``!take [P]``: answer page P (or the newest open page)."""
    await cmd_take(ev.ctx, ev.fx, ev.item, ev.args, reply_room=ev.reply_room, lang=ev.lang)
