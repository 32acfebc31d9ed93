"""A labelled form of Swift API widgets, the layout all three panels share."""
from __future__ import annotations

import typing

from emedge_core import EmedgeError


class Form:
    """A column of "label: widget" rows built with Swift's UI API (``ui`` from ``create_panel_widget``)."""

    def __init__(self, ui: typing.Any) -> None:
        self.ui = ui
        self.column = ui.create_column_widget()

    def _row(self, label: str, widget: typing.Any) -> typing.Any:
        row = self.ui.create_row_widget()
        row.add(self.ui.create_label_widget(label))
        row.add_spacing(6)
        row.add(widget)
        self.column.add(row)
        return widget

    def line(self, label: str, text: str) -> typing.Any:
        """A line edit; read its ``text``."""
        return self._row(label, self.ui.create_line_edit_widget(text))

    def combo(self, label: str, items: typing.Sequence[typing.Any],
              text: typing.Optional[typing.Callable[[typing.Any], str]] = None) -> typing.Any:
        """A combo box over ``items``; read its ``current_item``."""
        return self._row(label, self.ui.create_combo_box_widget(items, text))

    def buttons(self, *specs: tuple[str, typing.Callable[[], None]]) -> list[typing.Any]:
        """One row of push buttons, each (text, on_clicked)."""
        row = self.ui.create_row_widget()
        out = []
        for text, fn in specs:
            button = self.ui.create_push_button_widget(text)
            button.on_clicked = fn
            row.add(button)
            out.append(button)
        row.add_stretch()
        self.column.add(row)
        return out

    def progress(self) -> typing.Any:
        bar = self.ui.create_progress_bar_widget(0, 0, 100)
        self.column.add(bar)
        return bar

    def status(self, text: str) -> typing.Any:
        """The status line (errors start with ``error:``)."""
        label = self.ui.create_label_widget(text)
        self.column.add(label)
        self.column.add_stretch()
        return label


class PanelDelegate:
    """What Swift's ``api.create_panel`` registers: one ``view_class`` view per document window.

    Subclasses set ``panel_id``, ``panel_name`` and ``view_class`` (built as ``view_class(ui,
    document_window)``, exposing ``widget`` and optionally ``close()``).
    """

    panel_id: typing.ClassVar[str]
    panel_name: typing.ClassVar[str]
    view_class: typing.ClassVar[type[typing.Any]]
    panel_positions = ["left", "right"]
    panel_position = "right"

    def __init__(self) -> None:
        self.views: list[typing.Any] = []

    def create_panel_widget(self, ui: typing.Any, document_window: typing.Any) -> typing.Any:
        view = self.view_class(ui, document_window)
        self.views.append(view)
        return view.widget

    def close(self) -> None:
        for view in self.views:
            close = getattr(view, "close", None)
            if close is not None:
                close()
        self.views.clear()


def whole(widget: typing.Any, what: str) -> int:
    """The whole number in line edit ``widget``; else an EmedgeError naming the field ``what``."""
    try:
        return int(widget.text)
    except (TypeError, ValueError):
        raise EmedgeError(f"{what} must be a whole number, not {widget.text!r}") from None


def number(widget: typing.Any, what: str) -> float:
    """The number in line edit ``widget``; else an EmedgeError naming the field ``what``."""
    try:
        return float(widget.text)
    except (TypeError, ValueError):
        raise EmedgeError(f"{what} must be a number, not {widget.text!r}") from None
