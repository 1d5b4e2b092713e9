"""The app's dialogs: sign-in/unlock, help, confirmation, choices, forms, snippets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.connect import has_saved_login, last_account
from tui.messages import Problem
from tui.settings import TuiSettings
from tui.snippets import Snippet, search

if TYPE_CHECKING:
    pass

_DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; height: auto; max-height: 90%; padding: 1 2;
    border: thick $primary; background: $surface;
}}
{name} Label {{ margin-top: 1; }}
{name} .error {{ color: $error; margin-top: 1; }}
{name} Horizontal {{ height: auto; margin-top: 1; }}
{name} Button {{ margin-right: 2; }}
"""


class SignInScreen(Screen[None]):
    """First start: homeserver, user, password, passphrase (and a recovery key if the
    account already has security keys from another app). Later starts: only the
    passphrase that unlocks the saved device."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="SignInScreen")
    BINDINGS = [Binding("escape", "app.quit", "Quit")]

    def __init__(self, settings: TuiSettings) -> None:
        super().__init__()
        self.settings = settings
        saved = last_account(settings)
        if settings.user_id:
            saved = (settings.homeserver or (saved[0] if saved else ""), settings.user_id)
        self.account = saved
        self.unlock_only = bool(saved and saved[0] and has_saved_login(settings, saved[1]))

    def compose(self) -> ComposeResult:
        hs, user = self.account or (self.settings.homeserver, self.settings.user_id)
        with Vertical():
            if self.unlock_only:
                yield Static(Text.assemble(("Welcome back. ", "bold"), f"Unlock {user}"))
                yield Label("Passphrase")
                yield Input(password=True, id="passphrase")
            else:
                yield Static(Text("Sign in to your counselor account", style="bold"))
                yield Label("Homeserver")
                yield Input(hs or "", placeholder="https://matrix.example.org", id="homeserver")
                yield Label("User")
                yield Input(user or "", placeholder="@name:example.org", id="user")
                yield Label("Password")
                yield Input(password=True, id="password")
                yield Label("Passphrase for this machine's store and your notes")
                yield Input(password=True, id="passphrase")
                yield Label("Recovery key (only if you set up security keys in Element)")
                yield Input(id="recovery")
            yield Static("", id="signin-error", classes="error")
            with Horizontal():
                yield Button(
                    "Unlock" if self.unlock_only else "Sign in", id="go", variant="primary"
                )

    def _value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    @on(Input.Submitted)
    @on(Button.Pressed, "#go")
    def submit(self) -> None:
        from tui.app import CounselorApp  # the screen only runs inside it

        app = self.app
        assert isinstance(app, CounselorApp)
        passphrase = self.query_one("#passphrase", Input).value
        if not passphrase:
            self._error("Enter your passphrase.")
            return
        if self.unlock_only:
            assert self.account is not None
            hs, user = self.account
            password = recovery = None
        else:
            hs, user = self._value("homeserver"), self._value("user")
            password = self.query_one("#password", Input).value
            recovery = self._value("recovery") or None
            if not hs.startswith(("http://", "https://")):
                self._error("The homeserver address starts with https://")
                return
            if not (user.startswith("@") and ":" in user):
                self._error("Your user looks like @name:example.org")
                return
            if not password:
                self._error("Enter your password (needed once, on this machine).")
                return
        self._error("Signing in…" if not self.unlock_only else "Unlocking…")
        app.sign_in(hs, user, passphrase, password, recovery)

    def _error(self, text: str) -> None:
        self.query_one("#signin-error", Static).update(Text(text))

    def on_problem(self, message: Problem) -> None:
        message.stop()
        self._error(message.text)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = _DIALOG_CSS.format(name="HelpScreen")
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, rows: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("Keys\n\n", style="bold")
        for key, what in self.rows:
            text.append(f"{key:>10}  ", style="bold cyan")
            text.append(f"{what}\n")
        text.append("\nEsc closes this help.", style="dim")
        with Vertical():
            yield VerticalScroll(Static(text, id="help-text"))


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = _DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("escape,n", "no", "No"), Binding("y", "yes", "Yes")]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ChoiceScreen(ModalScreen[str | None]):
    DEFAULT_CSS = _DIALOG_CSS.format(name="ChoiceScreen")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, choices: Mapping[str, str]) -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            yield OptionList(
                *(Option(Text(label), id=key) for key, label in self.choices.items()),
                id="choices",
            )

    def on_mount(self) -> None:
        choices = self.query_one("#choices", OptionList)
        choices.highlighted = 0
        choices.focus()

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormScreen(ModalScreen[dict[str, str] | None]):
    """A few labelled inputs; Enter in the last one submits."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="FormScreen")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: Sequence[tuple[str, str, bool]]) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            for key, label, secret in self.fields:
                yield Label(label)
                yield Input(password=secret, id=f"field-{key}")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        if event.input is not inputs[-1]:
            self.focus_next()
            return
        self.dismiss(
            {key: self.query_one(f"#field-{key}", Input).value for key, _, _ in self.fields}
        )

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoticeScreen(ModalScreen[None]):
    DEFAULT_CSS = _DIALOG_CSS.format(name="NoticeScreen")
    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            yield Static(Text(self.body), id="notice-body")
            yield Static(Text("Enter closes this.", style="dim"))


class SnippetScreen(ModalScreen[str | None]):
    """Search the counselor's snippets; Enter inserts the chosen one (to edit before
    sending)."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="SnippetScreen")
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("down", "to_list", show=False)]

    def __init__(self, snippets: list[Snippet], lang: str) -> None:
        super().__init__()
        self.snippets = snippets
        self.lang = lang
        self.shown: list[Snippet] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Snippets: type to search, Enter to insert", style="bold"))
            yield Input(placeholder="search", id="snippet-search")
            yield OptionList(id="snippet-list")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one("#snippet-search", Input).focus()

    def _fill(self, query: str) -> None:
        self.shown = search(self.snippets, query, self.lang)
        ol = self.query_one("#snippet-list", OptionList)
        ol.set_options(
            Option(
                Text.assemble(
                    (s.name, "bold"),
                    f" [{s.lang}]" if s.lang else "",
                    "\n  ",
                    s.text[:60].replace("\n", " "),
                )
            )
            for s in self.shown
        )
        if self.shown:
            ol.highlighted = 0

    @on(Input.Changed, "#snippet-search")
    def changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#snippet-search")
    def submitted(self, event: Input.Submitted) -> None:
        ol = self.query_one("#snippet-list", OptionList)
        if self.shown and ol.highlighted is not None:
            self.dismiss(self.shown[ol.highlighted].text)

    @on(OptionList.OptionSelected, "#snippet-list")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.shown[event.option_index].text)

    def action_to_list(self) -> None:
        self.query_one("#snippet-list", OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)


__all__: list[Any] = [
    "ChoiceScreen",
    "ConfirmScreen",
    "FormScreen",
    "HelpScreen",
    "NoticeScreen",
    "SignInScreen",
    "SnippetScreen",
]
