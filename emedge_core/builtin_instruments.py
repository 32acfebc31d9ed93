"""The factories of the instruments this package ships, registered in the ``emedge.instruments``
entry-point group like any plug-in's (see :func:`emedge_core.instrument.open_instrument`)."""
from __future__ import annotations

import typing

from emedge_core import EmedgeError
from emedge_core.instrument import Instrument, InstrumentOptions
from emedge_core.replay import Replay
from emedge_core.twin import DigitalTwin


def open_twin(options: InstrumentOptions) -> Instrument:
    """The ``twin`` entry point: the seeded digital twin (:class:`emedge_core.twin.DigitalTwin`)."""
    try:
        return DigitalTwin(size=options.size, dose=options.dose, seed=options.seed, signal=options.signal_kind,
                           drift_px_per_frame=options.drift_px_per_frame)
    except ValueError as e:
        raise EmedgeError(str(e)) from None


def open_replay(options: InstrumentOptions) -> Instrument:
    """The ``replay`` entry point: frames from a file (:class:`emedge_core.replay.Replay`)."""
    if not options.data:
        raise EmedgeError("--instrument replay needs --data FILE")
    return typing.cast(Instrument, Replay(options.data, dataset=options.dataset, survey=options.survey,
                                          kind=options.signal_kind))
