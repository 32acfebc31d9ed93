"""One entry for every data file: :func:`open_data` -> :class:`DataSource`.

Microscope formats are read by rosettasciio (lazily, as dask arrays, where its reader can):
Gatan DM3/DM4, Velox/FEI and py4DSTEM/emdfile EMD, Quantum Detectors Merlin ``.mib`` (+ ``.hdr``),
Dectris Arina (``*_master.h5``), NanoMegas TopSpin ``.app5`` and blockfile ``.blo``, FEI/Thermo TIA
``.emi``/``.ser``, TVIPS, CEOS Panta Rhei ``.prz``, EMSA ``.msa``, MRC, NeXus ``.nxs`` and HyperSpy
``.hspy``/``.zspy``. Nion Swift's own items are read from their documented layout: ``.ndata`` (a zip of
``data.npy`` + ``metadata.json``), ``.h5`` (data set ``data`` with a JSON ``properties`` attribute) and a
Swift library folder of them. NumPy ``.npy``/``.npz``, emedge's replay layout (``survey``, ``data``,
``energy_eV``) and the EMD files emedge writes (``compress`` output, ``experiment.h5``) are read as before.

Whatever the file's own axis order, a :class:`DataSource` presents its array navigation first,
signal last (a DM SI stored (E, y, x) is (y, x, E)), from the axis metadata of the file, with
calibrations: the energy axis in eV, the scan step and its units, the detector mrad/px where the file
says it in mrad or rad, and the detector bit depth (``saturation`` = 2**bits - 1 counts).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
import zipfile

import numpy as np

from emedge_core import EmedgeError

#: units (lower case) that mark an axis as a spectrometer energy axis, and their factor to eV
ENERGY_UNITS = {"ev": 1.0, "kev": 1e3}
#: units (lower case) of scan lengths and their factor to nm
LENGTH_UNITS = {"m": 1e9, "mm": 1e6, "µm": 1e3, "μm": 1e3, "nm": 1.0, "a": 0.1, "angstrom": 0.1, "pm": 1e-3}
#: units of detector angles and their factor to mrad
ANGLE_UNITS = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3}
#: navigation-pixel read block when a survey is summed from the signal (bytes of float64)
SUM_BLOCK_BYTES = 32 << 20

RSCIIO_READERS = {
    ".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".mib": "quantumdetector",
    ".hdr": "quantumdetector", ".app5": "topspin", ".mrc": "mrc", ".nxs": "nexus", ".hspy": "hspy",
    ".zspy": "zspy", ".emd": "emd", ".emi": "tia", ".ser": "tia", ".blo": "blockfile", ".tvips": "tvips",
    ".prz": "pantarhei", ".msa": "msa",
}
#: what emedge opens itself (HDF5 through h5py first: Swift, emedge, py4DSTEM and plain layouts)
NATIVE = frozenset({".npy", ".npz", ".ndata", ".h5", ".hdf5", ".emd", ".nxs", ".hspy"})
SURVEY_TITLES = ("haadf", "adf", "df", "survey", "stem")


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of the presented array: ``start + step * i`` in ``units`` for i < ``size``."""

    name: str
    units: str
    start: float
    step: float
    size: int
    navigate: bool

    def values(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.size, dtype=np.float64)

    def as_dict(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SignalInfo:
    """One signal a file holds, as listed to the user: ``title``, presented ``shape``, ``kind``."""

    title: str
    shape: tuple[int, ...]
    kind: str

    def __str__(self) -> str:
        return f"{self.title or '(untitled)'} {'x'.join(map(str, self.shape))} {self.kind}"


@dataclasses.dataclass(eq=False)
class _Candidate:
    """A signal found in a file before one is chosen: its array in file order and what to do with it."""

    title: str
    data: typing.Any                       # np.ndarray, dask array or h5py.Dataset, file axis order
    axes: list[Axis]                       # presented order (navigation first)
    order: tuple[int, ...]                 # file axis of each presented axis
    properties: dict[str, typing.Any]
    bits: typing.Optional[int] = None
    signal_type: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def sig_ndim(self) -> int:
        return sum(1 for a in self.axes if not a.navigate)

    @property
    def kind(self) -> str:
        return _kind(self.axes, self.signal_type)

    def info(self) -> SignalInfo:
        return SignalInfo(self.title, self.shape, self.kind)


def _kind(axes: list[Axis], signal_type: str = "") -> str:
    sig = [a for a in axes if not a.navigate]
    nav = len(axes) - len(sig)
    if len(sig) == 1 and (sig[0].units.lower() in ENERGY_UNITS or signal_type.upper().startswith(("EELS", "EDS"))):
        return "spectrum"
    if len(sig) == 2 and nav >= 1:
        return "diffraction"
    if len(sig) == 2:
        return "image"
    if len(sig) == 1:
        return "spectrum" if nav else "line"
    return "other"


class DataSource:
    """A data set opened for reading, navigation first, signal last.

    data: the array (a NumPy array or memory map, an h5py data set or a dask array), shape
    ``nav_shape + sig_shape``; read it in slices of the first axis (:meth:`frames`), never whole.
    axes: one :class:`Axis` per dimension of ``data``. kind: "spectrum" (sig (E,)),
    "diffraction" (sig (ky, kx) with a scan), "image", "line" or "other".
    energy_eV: (E,) float64 energy axis of spectra, else None. mrad_per_px: detector calibration or
    None. bits / saturation: detector counter depth and its full count (2**bits - 1), None when unknown.
    side: small arrays that travel with the data (the replay layout's ``survey`` and ``energy_eV``).
    properties: the file's own metadata worth keeping (Swift ``properties``, the rosettasciio
    ``metadata``). signals: every signal the file holds; ``title`` names the one opened.
    """

    def __init__(self, path: str, title: str, data: typing.Any, axes: list[Axis], *, kind: str,
                 signals: list[SignalInfo], properties: typing.Optional[dict[str, typing.Any]] = None,
                 bits: typing.Optional[int] = None, side: typing.Optional[dict[str, np.ndarray]] = None,
                 survey_image: typing.Optional[np.ndarray] = None, survey_from: str = "",
                 instrument_state: typing.Optional[dict[str, typing.Any]] = None,
                 closers: typing.Sequence[typing.Callable[[], None]] = ()) -> None:
        self.path = path
        self.title = title
        self.data = data
        self.axes = list(axes)
        self.kind = kind
        self.signals = list(signals)
        self.properties = dict(properties or {})
        self.bits = bits
        self.side = dict(side or {})
        self.instrument_state = dict(instrument_state or {})
        self._survey = survey_image
        self._survey_from = survey_from
        self._closers = list(closers)
        self.nav_shape: tuple[int, ...] = ()
        self.sig_shape: tuple[int, ...] = ()
        self.energy_eV: typing.Optional[np.ndarray] = None
        self.mrad_per_px: typing.Optional[float] = None
        self.set_axes(self.axes)

    def set_axes(self, axes: list[Axis]) -> None:
        """Take ``axes`` (one per dimension of ``data``) and the calibrations they state."""
        self.axes = list(axes)
        self.nav_shape = tuple(a.size for a in self.axes if a.navigate)
        sig = [a for a in self.axes if not a.navigate]
        self.sig_shape = tuple(a.size for a in sig)
        if "energy_eV" in self.side and len(sig) == 1:
            self.energy_eV = np.asarray(self.side["energy_eV"], np.float64)
        elif len(sig) == 1 and sig[0].units.lower() in ENERGY_UNITS:
            self.energy_eV = sig[0].values() * ENERGY_UNITS[sig[0].units.lower()]
        if len(sig) == 2 and sig[-1].units.lower() in ANGLE_UNITS and sig[-1].step > 0:
            self.mrad_per_px = float(sig[-1].step * ANGLE_UNITS[sig[-1].units.lower()])

    # ------------------------------------------------------------------ reading
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def saturation(self) -> typing.Optional[float]:
        """Counts at which a detector pixel is full (2**bits - 1), None when the bit depth is unknown."""
        return float(2 ** self.bits - 1) if self.bits else None

    @property
    def scan_step(self) -> typing.Optional[tuple[float, str]]:
        """(step, units) of the last navigation axis, None without a calibrated scan."""
        nav = [a for a in self.axes if a.navigate]
        if not nav or not nav[-1].units:
            return None
        return nav[-1].step, nav[-1].units

    @property
    def scan_pixel_nm(self) -> typing.Optional[float]:
        """Edge of one scan pixel in nm (the last navigation axis' |step|; TIA stores y steps < 0),
        None unless that axis is in a length unit (m, µm, nm, Å, pm)."""
        step = self.scan_step
        if step is None:
            return None
        factor = LENGTH_UNITS.get(step[1].strip().lower().replace("um", "µm").replace("å", "a"))
        return abs(step[0]) * factor if factor is not None and step[0] else None

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` in flat scan order, (stop - start, *sig_shape), read row by row."""
        nav = self.nav_shape
        if len(nav) <= 1:
            return np.asarray(self.data[start:stop])
        last = nav[-1]
        if len(nav) == 2 and start % last == 0 and stop % last == 0:      # whole scan rows: one read
            return np.asarray(self.data[start // last:stop // last]).reshape((-1,) + self.sig_shape)
        rows = []
        for r in range(start // last, (stop - 1) // last + 1):
            lo, hi = max(start, r * last) - r * last, min(stop, (r + 1) * last) - r * last
            idx = np.unravel_index(r, nav[:-1])
            rows.append(np.asarray(self.data[tuple(int(i) for i in idx) + (slice(lo, hi),)]))
        return np.concatenate(rows).reshape((-1,) + self.sig_shape)

    def survey(self) -> tuple[np.ndarray, str]:
        """(H, W) float32 survey image on the scan grid and where it came from: the ``--survey`` file,
        an image in the same file, or (last) the signal summed over its axes."""
        if self._survey is None:
            if len(self.nav_shape) != 2:
                raise EmedgeError(f"{self.path}: {self.title!r} has no (H, W) scan (navigation shape "
                                  f"{self.nav_shape}); a survey needs one")
            self._survey = self._summed()
            self._survey_from = f"the summed signal of {self.title!r}"
        return self._survey, self._survey_from

    def _summed(self) -> np.ndarray:
        h, w = self.nav_shape
        frame = max(1, int(np.prod(self.sig_shape, dtype=np.int64)) * 8)
        rows = max(1, SUM_BLOCK_BYTES // (frame * w))
        out = np.empty((h, w), np.float32)
        sig_axes = tuple(range(2, 2 + len(self.sig_shape)))
        for r in range(0, h, rows):
            block = np.asarray(self.data[r:r + rows], np.float64)
            out[r:r + rows] = np.nansum(block, axis=sig_axes)
        return out

    def describe(self) -> dict[str, typing.Any]:
        """What ``emedge inspect`` lists: the signals, the opened one's shape, axes and calibrations."""
        return {"path": self.path, "signals": [dataclasses.asdict(s) for s in self.signals],
                "opened": self.title, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype.name,
                "axes": [a.as_dict() for a in self.axes],
                "energy_eV": None if self.energy_eV is None else
                [float(self.energy_eV[0]), float(self.energy_eV[-1]), len(self.energy_eV)],
                "mrad_per_px": self.mrad_per_px, "bits": self.bits, "saturation": self.saturation,
                "survey": self._survey_from or None}

    def close(self) -> None:
        """Close the files behind ``data``."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> "DataSource":
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        self.close()


# ---------------------------------------------------------------------- entry point
def open_data(path: str, dataset: typing.Union[None, str, int] = None,
              survey: typing.Optional[str] = None, kind: typing.Optional[str] = None) -> DataSource:
    """Open ``path`` (any supported format, see the module docstring) and choose one signal.

    dataset: the signal's title (or HDF5 path / array name) or its index in the list of the file's
    signals; without it a file holding one scan signal opens that one, and a file holding several
    raises an :class:`EmedgeError` that lists them. survey: a file whose HAADF/ADF image (at the
    scan's grid or a whole multiple of it, binned down) becomes :meth:`DataSource.survey`.
    kind: "spectrum" or "diffraction" when the caller needs that kind (a scalarizer): without
    ``dataset`` the only signal of that kind is chosen (in a plain HDF5 file the largest 3-D or 4-D
    data set).
    """
    if not os.path.exists(path):
        raise EmedgeError(f"file not found: {path}")
    ext = os.path.splitext(path.rstrip("/"))[1].lower()
    if os.path.isdir(path) and ext != ".zspy":
        src = _open_swift_library(path, dataset, kind)
    elif ext == ".npy":
        src = _open_npy(path)
    elif ext == ".npz":
        src = _open_npz(path, dataset)
    elif ext == ".ndata":
        src = _open_ndata(path)
    elif ext in (".h5", ".hdf5", ".emd", ".nxs", ".hspy"):
        src = _open_hdf5(path, dataset, ext, kind)
    elif ext in RSCIIO_READERS:
        src = _open_rsciio(path, RSCIIO_READERS[ext], dataset, kind)
    else:
        raise EmedgeError(f"{path}: unknown format {ext or '(no extension)'}; supported: "
                          f"{' '.join(sorted(set(RSCIIO_READERS) | NATIVE))} or a Swift library folder")
    if survey is not None:
        try:
            _attach_survey(src, survey)
        except BaseException:
            src.close()
            raise
    return src


# ---------------------------------------------------------------------- choosing a signal
def _choose(path: str, cands: list[_Candidate], dataset: typing.Union[None, str, int],
            kind: typing.Optional[str] = None) -> _Candidate:
    listing = "; ".join(f"[{i}] {c.info()}" for i, c in enumerate(cands))
    if not cands:
        raise EmedgeError(f"{path} holds no numeric array")
    if dataset is not None:
        text = str(dataset)
        if text.lstrip("-").isdigit() and not any(c.title == text for c in cands):
            i = int(text)
            if not -len(cands) <= i < len(cands):
                raise EmedgeError(f"--dataset {i}: {path} holds {len(cands)} signals: {listing}")
            return cands[i]
        hits = [c for c in cands if c.title == text or c.title.strip("/") == text.strip("/")]
        if len(hits) == 1:
            return hits[0]
        raise EmedgeError(f"--dataset {text!r} " + ("names several signals" if hits else "is not in the file")
                          + f"; {path} holds: {listing} (give a title or an index)")
    if len(cands) == 1:
        return cands[0]
    scans = [c for c in cands if c.kind in ("spectrum", "diffraction") and any(a.navigate for a in c.axes)]
    if len(scans) > 1 and kind is not None:
        scans = [c for c in scans if c.kind == kind]
    if len(scans) == 1:
        return scans[0]
    raise EmedgeError(f"{path} holds {len(cands)} signals; choose one with --dataset NAME|INDEX: {listing}")


def _source(path: str, cands: list[_Candidate], chosen: _Candidate,
            closers: typing.Sequence[typing.Callable[[], None]] = (), **extra: typing.Any) -> DataSource:
    """The DataSource of ``chosen`` (transposed navigation first) with a survey from a sibling image."""
    data = chosen.data
    if chosen.order != tuple(range(len(chosen.order))):
        data = _transpose(data, chosen.order)
    if not np.dtype(data.dtype).isnative:
        data = _native(data)
    bits = chosen.bits
    if bits is not None and np.dtype(data.dtype).kind in "ui":
        bits = min(bits, np.dtype(data.dtype).itemsize * 8)     # Arina states 32 for frames stored as uint16
    src = DataSource(path, chosen.title, data, chosen.axes, kind=chosen.kind, signals=[c.info() for c in cands],
                     properties=chosen.properties, bits=bits, closers=closers, **extra)
    if src._survey is None and len(src.nav_shape) == 2:
        for c in sorted(cands, key=lambda c: not c.title.lower().startswith(SURVEY_TITLES)):
            if c is chosen or c.kind != "image":
                continue
            try:
                img = bin_to(np.asarray(_transpose(c.data, c.order) if c.order != (0, 1) else c.data[()], np.float32),
                             src.nav_shape)
            except EmedgeError:
                continue
            src._survey, src._survey_from = img, f"the image {c.title!r} in the same file"
            break
    return src


def _transpose(data: typing.Any, order: tuple[int, ...]) -> typing.Any:
    if isinstance(data, np.ndarray):
        return np.transpose(data, order)
    import dask.array as da

    return da.transpose(data if hasattr(data, "dask") else da.from_array(data, chunks="auto"), order)


def _native(data: typing.Any) -> typing.Any:
    """Big-endian arrays (12/24-bit Merlin) in native byte order: same values, the dtype every writer takes."""
    native = np.dtype(data.dtype).newbyteorder("=")
    return data.astype(native)


def bin_to(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mean-bin an (h, w) image to ``shape`` (H, W) when h, w are whole multiples of H, W."""
    img = np.asarray(image, np.float32)
    if img.ndim != 2 or len(shape) != 2:
        raise EmedgeError(f"a survey must be a 2-D image, not shape {img.shape}")
    (h, w), (sh, sw) = img.shape, shape
    if h % sh or w % sw or h < sh or w < sw:
        raise EmedgeError(f"the survey image is {h}x{w}, not the scan's {sh}x{sw} grid or a whole multiple of it")
    return img.reshape(sh, h // sh, sw, w // sw).mean(axis=(1, 3))


def _attach_survey(src: DataSource, path: str) -> None:
    if len(src.nav_shape) != 2:
        raise EmedgeError(f"--survey: {src.title!r} in {src.path} has no (H, W) scan")
    try:
        s = open_data(path)
    except EmedgeError as e:             # several signals: take the first image among them
        images = [c for c in _list_signals(path) if c.kind == "image"]
        if not images:
            raise EmedgeError(f"--survey {path}: {e}") from None
        s = open_data(path, dataset=images[0].title)
    with s:
        if s.kind != "image":
            raise EmedgeError(f"--survey {path} holds a {s.kind} {s.shape}, not a 2-D HAADF/ADF image")
        img = np.asarray(s.data[()], np.float32)
    src._survey = bin_to(img, src.nav_shape)
    src._survey_from = f"--survey {path}"


def _list_signals(path: str) -> list[SignalInfo]:
    """The signals of a file that holds several (opening its first one to read the list)."""
    with open_data(path, dataset=0) as s:
        return s.signals


# ---------------------------------------------------------------------- NumPy and replay layouts
def _plain_axes(shape: tuple[int, ...], sig_ndim: int) -> list[Axis]:
    n = len(shape)
    return [Axis(f"dim{i}", "", 0.0, 1.0, int(s), i < n - sig_ndim) for i, s in enumerate(shape)]


def _default_sig_ndim(ndim: int, energy: bool) -> int:
    if energy:
        return 1
    return {1: 1, 2: 2, 3: 1}.get(ndim, 2)


def _open_npy(path: str) -> DataSource:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EmedgeError(f"cannot read {path} as .npy: {e}") from None
    axes = _plain_axes(a.shape, _default_sig_ndim(a.ndim, False))
    name = os.path.splitext(os.path.basename(path))[0]
    return DataSource(path, name, a, axes, kind=_kind(axes), signals=[SignalInfo(name, a.shape, _kind(axes))])


def _open_npz(path: str, dataset: typing.Union[None, str, int]) -> DataSource:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise EmedgeError(f"cannot read {path} as .npz: {e}") from None
    return _replay_layout(path, arrays, dataset, {})


def _replay_layout(path: str, arrays: typing.Mapping[str, typing.Any], dataset: typing.Union[None, str, int],
                   state: dict[str, typing.Any],
                   closers: typing.Sequence[typing.Callable[[], None]] = ()) -> DataSource:
    """emedge's replay layout (``data`` + optional ``survey``/``energy_eV``), or named arrays."""
    key = str(dataset) if dataset is not None else "data"
    if key not in arrays:
        raise EmedgeError(f"{path} has no {key!r} array (has {sorted(arrays)}); name one with --dataset")
    data = arrays[key]
    side = {k: np.asarray(arrays[k][()]) for k in ("survey", "energy_eV") if k in arrays and k != key}
    shape = tuple(int(s) for s in data.shape)
    sig = _default_sig_ndim(len(shape), "energy_eV" in side and len(shape) >= 2)
    axes = _plain_axes(shape, sig)
    if "energy_eV" in side and len(shape) >= 2:
        e = side["energy_eV"]
        axes[-1] = Axis("energy", "eV", float(e[0]), float(e[1] - e[0]) if len(e) > 1 else 1.0, shape[-1], False)
    survey = side.get("survey")
    kind = _kind(axes)
    signals = [SignalInfo(k, tuple(int(s) for s in arrays[k].shape), "side" if k != key else kind) for k in arrays]
    return DataSource(path, key, data, axes, kind=kind, signals=signals, side=side, instrument_state=state,
                      survey_image=None if survey is None or survey.ndim != 2 else np.asarray(survey, np.float32),
                      survey_from="" if survey is None else f"'survey' in {os.path.basename(path)}", closers=closers)


# ---------------------------------------------------------------------- HDF5 family
def _open_hdf5(path: str, dataset: typing.Union[None, str, int], ext: str, kind: typing.Optional[str]) -> DataSource:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc2/Bitshuffle/zstd filters of compressed files)

    if ext == ".nxs":
        return _open_rsciio(path, "nexus", dataset, kind)
    if ext == ".hspy":
        return _open_rsciio(path, "hspy", dataset, kind)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EmedgeError(f"cannot read {path} as HDF5: {e}") from None
    try:
        attrs = {k: _text(v) for k, v in f.attrs.items() if k in ("emd_group_type", "authoring_program",
                                                                   "file_format", "NX_class")}
        if attrs.get("emd_group_type") == "file" and attrs.get("authoring_program", "").startswith("nionswift-emedge"):
            return _open_emedge_emd(path, f, dataset)
        reader = None
        if attrs.get("emd_group_type") == "file" or "Version" in f and "Data" in f:
            reader = "emd"                       # py4DSTEM/emdfile EMD 1.0 or Velox/FEI
        elif attrs.get("file_format", "").lower() == "hyperspy":
            reader = "hspy"
        elif os.path.basename(path).endswith("_master.h5"):
            reader = "arina"
        elif attrs.get("NX_class"):
            reader = "nexus"
        if reader is not None:
            f.close()
            return _open_rsciio(path, reader, dataset, kind)
        ds = f.get("data")
        if isinstance(ds, h5py.Dataset) and "properties" in ds.attrs and dataset in (None, "data", 0, "0"):
            return _swift_item(path, ds, _json(ds.attrs["properties"]), closers=[f.close])
        if dataset is None and isinstance(ds, h5py.Dataset) or dataset is not None and str(dataset) in f and \
                isinstance(f[str(dataset)], h5py.Dataset) and str(dataset) in ("data", "survey", "energy_eV"):
            return _replay_layout(path, f, dataset, {}, closers=[f.close])
        return _generic_hdf5(path, f, dataset, kind)
    except BaseException:
        if f.id.valid:
            f.close()
        raise


def _text(v: typing.Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json(v: typing.Any) -> dict[str, typing.Any]:
    try:
        out = json.loads(_text(v))
    except ValueError as e:
        raise EmedgeError(f"Swift 'properties' are not JSON: {e}") from None
    return out if isinstance(out, dict) else {}


def _generic_hdf5(path: str, f: typing.Any, dataset: typing.Union[None, str, int],
                  kind: typing.Optional[str]) -> DataSource:
    """Any HDF5 file: its numeric data sets by path (the largest first); EMD 1.0 dim vectors as calibrations."""
    import h5py

    found: list[typing.Any] = []

    def visit(name: str, obj: typing.Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and np.dtype(obj.dtype).kind in "uif" \
                and not _is_emd_dim(obj):
            found.append(obj)

    f.visititems(visit)
    found.sort(key=lambda d: -int(d.size))
    cands = []
    for d in found:
        axes = _plain_axes(d.shape, _default_sig_ndim(d.ndim, False))
        energy = _emd_energy(d)
        if energy is not None:
            axes = _plain_axes(d.shape, 1)
            axes[-1] = Axis("energy", "eV", float(energy[0]), float(energy[1] - energy[0]) if len(energy) > 1 else 1.0,
                            d.shape[-1], False)
        axes = _emd_calibrated(d, axes)
        cands.append(_Candidate(d.name.lstrip("/"), d, axes, tuple(range(d.ndim)), {}))
    if dataset is None and kind is not None:      # the largest 3-D (spectra) or 4-D (patterns) data set
        want = 3 if kind == "spectrum" else 4
        fitting = [c for c in cands if len(c.shape) == want]
        if not fitting:
            f.close()
            raise EmedgeError(f"{path} holds no {want}-D dataset for {kind} frames; name one with --dataset")
        chosen = fitting[0]
    elif dataset is None and cands:
        chosen = cands[0]                           # the largest
    else:
        chosen = _choose(path, cands, dataset)
    src = _source(path, cands, chosen, closers=[f.close])
    if "energy_eV" in f and src.kind in ("spectrum", "line") and isinstance(f["energy_eV"], h5py.Dataset):
        src.energy_eV = np.asarray(f["energy_eV"][()], np.float64)
    if "mrad_per_px" in chosen.data.attrs:
        src.mrad_per_px = float(chosen.data.attrs["mrad_per_px"])
    return src


def _is_emd_dim(ds: typing.Any) -> bool:
    """A ``dimN`` vector of an EMD 1.0 data group: an axis, not a signal."""
    import re

    return bool(re.fullmatch(r"dim\d+", ds.name.rsplit("/", 1)[-1])) and "emd_group_type" in ds.parent.attrs


def _emd_calibrated(ds: typing.Any, axes: list[Axis]) -> list[Axis]:
    """``axes`` with the names, units, start and step of the data set's EMD 1.0 dim vectors (``dim1`` ..
    in its group), where they are there and fit; EMD's "[n_m]" style units become "nm"."""
    if "emd_group_type" not in ds.parent.attrs:
        return axes
    out = list(axes)
    for i, ax in enumerate(axes):
        dim = ds.parent.get(f"dim{i + 1}")
        if dim is None or dim.ndim != 1 or np.dtype(dim.dtype).kind not in "uif" or dim.shape[0] not in (ax.size, 2):
            continue
        v = np.asarray(dim[()], np.float64)
        units = _text(dim.attrs.get("units", "")).strip("[]").replace("_", "") or ax.units
        name = _text(dim.attrs.get("name", "")) or ax.name
        out[i] = dataclasses.replace(ax, name=name, units=units, start=float(v[0]),
                                     step=float(v[1] - v[0]) if len(v) > 1 else ax.step)
    return out


def _emd_energy(ds: typing.Any) -> typing.Optional[np.ndarray]:
    """The (E,) eV axis of a data set from its EMD 1.0 dim vector (``dimN``, or emdfile's 0-based one)."""
    n_e = ds.shape[-1]
    for name in (f"dim{ds.ndim}", f"dim{ds.ndim - 1}"):
        dim = ds.parent.get(name)
        if dim is None or _text(dim.attrs.get("units", "")) != "eV":
            continue
        v = np.asarray(dim[()], np.float64).ravel()
        if v.shape == (n_e,):
            return v
        if v.shape == (2,):                 # a linear axis stored as its first two values
            return v[0] + (v[1] - v[0]) * np.arange(n_e)
    return None


def _open_emedge_emd(path: str, f: typing.Any, dataset: typing.Union[None, str, int]) -> DataSource:
    """An EMD file emedge wrote: its arrays read through emedge's reader (which undoes every codec),
    with the axes of its EMD dim vectors and the metadata kept with the array."""
    import h5py

    from emedge_core import emd

    root = emd.root_group(f, None)
    names = [k for k, v in root.items() if emd.is_array(v)]
    preferred = [k for k in ("data", "frames") if k in names]     # 'frames': an experiment.h5
    key = str(dataset) if dataset is not None else (
        preferred[0] if preferred else max(names, key=lambda k: _stored_bytes(root[k]), default=None))
    if key not in names and dataset is not None and str(dataset).isdigit() and int(dataset) < len(names):
        key = names[int(dataset)]
    if key is None or key not in names:
        f.close()
        raise EmedgeError(f"{path} has no EMD array {key!r} (has {names}); name one with --dataset")
    key = str(key)
    nav_ndim = int(root[key].attrs.get("emedge_nav_ndim", 1))
    desc = emd.info(path)
    a = desc["arrays"][key]
    wanted = [s for s in ("survey", "energy_eV") if s in names and s != key]
    arrays: dict[str, typing.Any] = {k: emd.read_array(root[k]) for k in wanted}
    closers: list[typing.Callable[[], None]] = []
    stored = f.get(a["dataset"]) if a["dataset"] else None
    if a["warning"] is None and isinstance(stored, h5py.Dataset) and tuple(stored.shape) == tuple(a["shape"]) \
            and stored.dtype == np.dtype(a["dtype"]):
        arrays[key] = stored                 # any HDF5 reader decodes it: read lazily, slice by slice
        closers.append(f.close)
    else:
        arrays[key] = emd.read_array(root[key])     # an opt-in codec only emedge's reader inverts: whole
        f.close()
    state = desc.get("provenance", {}).get("instrument_state")
    src = _replay_layout(path, arrays, key, state if isinstance(state, dict) else {}, closers=closers)
    src.set_axes([Axis(d["name"], "" if d["units"] == "pixels" else d["units"], float(d["start"]),
                       float(d["step"]) if d["step"] is not None else 1.0, int(d["size"]), i < nav_ndim)
                  for i, d in enumerate(a["dims"])])
    src.kind = _kind(src.axes)
    src.properties = dict(a.get("metadata") or {})
    src.signals = [SignalInfo(k, tuple(desc["arrays"][k]["shape"]), src.kind if k == key else "array") for k in names]
    return src


def _stored_bytes(group: typing.Any) -> int:
    d = group.get("data") if "data" in group else group.get("events_per_frame")
    return int(d.size * d.dtype.itemsize) if d is not None else 0


# ---------------------------------------------------------------------- Nion Swift
def _swift_axes(shape: tuple[int, ...], props: dict[str, typing.Any]) -> list[Axis]:
    """Axes of a Swift item from its ``dimensional_calibrations`` and data descriptor (navigation first already)."""
    n = len(shape)
    datum = props.get("datum_dimension_count")
    if datum is None:
        collection = props.get("collection_dimension_count")
        datum = n - int(collection) - int(bool(props.get("is_sequence"))) if collection is not None else min(n, 2)
    datum = int(datum) if 1 <= int(datum) <= n else min(n, 2)
    cals = list(props.get("dimensional_calibrations") or [])
    axes = []
    for i, size in enumerate(shape):
        c = cals[i] if i < len(cals) and isinstance(cals[i], dict) else {}
        axes.append(Axis(f"dim{i}", str(c.get("units", "") or ""), float(c.get("offset", 0.0) or 0.0),
                         float(c.get("scale", 1.0) or 1.0), int(size), i < n - datum))
    return axes


def _swift_item(path: str, data: typing.Any, props: dict[str, typing.Any],
                closers: typing.Sequence[typing.Callable[[], None]] = ()) -> DataSource:
    shape = tuple(int(s) for s in data.shape)
    axes = _swift_axes(shape, props)
    title = str(props.get("title", "") or os.path.splitext(os.path.basename(path))[0])
    cand = _Candidate(title, data, axes, tuple(range(len(shape))), {"title": title, "swift_properties": props})
    return _source(path, [cand], cand, closers=closers)


def _read_ndata(path: str) -> tuple[np.ndarray, dict[str, typing.Any]]:
    try:
        with zipfile.ZipFile(path) as z:
            props = _json(z.read("metadata.json"))
            info = z.getinfo("data.npy")
            if info.compress_type == zipfile.ZIP_STORED:      # Swift stores it plain: map it, read lazily
                with open(path, "rb") as fp:
                    fp.seek(info.header_offset)
                    head = fp.read(30)
                    start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") \
                        + int.from_bytes(head[28:30], "little")
                    fp.seek(start)
                    version = np.lib.format.read_magic(fp)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read_header(fp)
                    offset = fp.tell()
                data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
            else:
                with z.open("data.npy") as fp:
                    data = np.load(fp, allow_pickle=False)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise EmedgeError(f"cannot read {path} as a Swift .ndata (zip of data.npy + metadata.json): {e}") from None
    return data, props


def _open_ndata(path: str) -> DataSource:
    data, props = _read_ndata(path)
    return _swift_item(path, data, props)


def _open_swift_library(path: str, dataset: typing.Union[None, str, int], kind: typing.Optional[str]) -> DataSource:
    """A Swift library folder: each .ndata / .h5 data item is one signal (title from its properties)."""
    import h5py

    items: list[tuple[str, dict[str, typing.Any], tuple[int, ...]]] = []
    for dirpath, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            if name.endswith(".ndata"):
                data, props = _read_ndata(p)
                items.append((p, props, tuple(data.shape)))
            elif name.endswith(".h5"):
                try:
                    with h5py.File(p, "r") as f:
                        ds = f.get("data")
                        if isinstance(ds, h5py.Dataset) and "properties" in ds.attrs:
                            items.append((p, _json(ds.attrs["properties"]), tuple(ds.shape)))
                except OSError:
                    continue
    if not items:
        raise EmedgeError(f"{path} is a folder without Swift data items (.ndata / .h5)")
    cands = [_Candidate(str(props.get("title", "") or os.path.basename(p)), None, _swift_axes(shape, props),
                        tuple(range(len(shape))), props) for p, props, shape in items]
    chosen = _choose(path, cands, dataset, kind)
    src = open_data(items[cands.index(chosen)][0])
    src.signals = [c.info() for c in cands]
    if src._survey is None and len(src.nav_shape) == 2:
        for (p, _, _), c in zip(items, cands, strict=True):
            if c.kind == "image" and c is not chosen:
                try:
                    with open_data(p) as img:
                        src._survey = bin_to(np.asarray(img.data[()], np.float32), src.nav_shape)
                        src._survey_from = f"the Swift item {c.title!r}"
                        break
                except EmedgeError:
                    continue
    return src


# ---------------------------------------------------------------------- rosettasciio
def _open_rsciio(path: str, reader: str, dataset: typing.Union[None, str, int],
                 kind: typing.Optional[str] = None) -> DataSource:
    import importlib
    import warnings

    try:
        module = importlib.import_module(f"rsciio.{reader}")
    except ImportError as e:
        raise EmedgeError(f"reading {path} needs rosettasciio's {reader} reader ({e}); "
                          "pip install rosettasciio") from None
    # arina and topspin read eagerly only; pantarhei's lazy read of a legacy .prz gives other values than
    # its eager read (rosettasciio 0.15, panta_rhei_sample_legacy.prz), so it is read whole
    kwargs: dict[str, typing.Any] = {"lazy": reader not in ("arina", "topspin", "pantarhei")}
    if reader == "quantumdetector" and path.lower().endswith(".hdr"):
        path = path[:-4] + ".mib"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                signals = module.file_reader(path, **kwargs)
            except (NotImplementedError, ValueError) as e:   # no lazy mode (msa, DM RGBA): read it whole
                if not kwargs["lazy"] or "lazy" not in str(e).lower() and not isinstance(e, NotImplementedError):
                    raise
                signals = module.file_reader(path, lazy=False)
    except ImportError as e:
        raise EmedgeError(f"reading {path} needs a package rosettasciio asks for: {e}") from None
    except Exception as e:                 # any reader failure is one line for the user
        raise EmedgeError(f"rosettasciio's {reader} reader cannot read {path}: {type(e).__name__}: {e}") from None
    cands = []
    for i, s in enumerate(signals):
        data = s["data"]
        if np.dtype(data.dtype).kind not in "uif" or len(data.shape) == 0:
            continue
        axes, order = _rsciio_axes(path, s, tuple(int(n) for n in data.shape))
        md = s.get("metadata", {}) or {}
        title = str(md.get("General", {}).get("title") or f"signal{i}")
        cands.append(_Candidate(title, data, axes, order, {"title": title, "rsciio_metadata": _plain(md)},
                                bits=_bits(reader, s, path),
                                signal_type=str(md.get("Signal", {}).get("signal_type", ""))))
    titles = [c.title for c in cands]
    for i, c in enumerate(cands):    # repeated titles (Velox: three 'EELS') become 'EELS', 'EELS#2', ...
        n = titles[:i + 1].count(c.title)
        if n > 1:
            c.title = f"{c.title}#{n}"
    chosen = _choose(path, cands, dataset, kind)
    return _source(path, cands, chosen)


def _rsciio_axes(path: str, s: dict[str, typing.Any], shape: tuple[int, ...]) -> tuple[list[Axis], tuple[int, ...]]:
    """Presented axes (navigation first, signal last) and the file axis of each, from rosettasciio's axes."""
    raw = list(s.get("axes", []))
    n = len(shape)
    if not raw:                                   # an uncalibrated array (a NeXus NXdata without axes)
        return _plain_axes(shape, _default_sig_ndim(n, False)), tuple(range(n))
    if len(raw) != n:
        raise EmedgeError(f"{path}: rosettasciio gives {len(raw)} axes for an array of shape {shape}")
    if tuple(int(a.get("size", -1)) for a in raw) != shape:
        idx = [a.get("index_in_array") for a in raw]
        if sorted(i for i in idx if i is not None) != list(range(n)) or \
                any(int(raw[k]["size"]) != shape[int(idx[k])] for k in range(n)):
            raise EmedgeError(f"{path}: the axis sizes {[a.get('size') for a in raw]} do not match the array {shape}")
        raw = [raw[idx.index(i)] for i in range(n)]
    units = [str(a.get("units", "") or "") for a in raw]
    names = [str(a.get("name", "") or "") for a in raw]
    energy = [i for i in range(n) if units[i].lower() in ENERGY_UNITS]
    flags = [a.get("navigate") for a in raw]
    signal_type = str((s.get("metadata", {}) or {}).get("Signal", {}).get("signal_type", ""))
    if len(energy) == 1 and n >= 1:
        sig = energy                                  # a spectrum: the energy axis is the signal, wherever stored
    elif all(isinstance(f, (bool, np.bool_)) for f in flags) and any(flags) and not all(flags):
        sig = [i for i in range(n) if not flags[i]]
    elif n >= 3 and n == 4 or "diffraction" in signal_type and n >= 3:
        sig = [n - 2, n - 1]
    else:
        sig = list(range(max(0, n - 2), n)) if n != 1 else [0]
    nav = [i for i in range(n) if i not in sig]
    order = tuple(nav + sig)
    axes = [Axis(names[i] or f"dim{i}", units[i], float(raw[i].get("offset", 0.0) or 0.0),
                 float(raw[i].get("scale", 1.0) or 1.0), shape[i], i in nav) for i in order]
    return axes, order


def _bits(reader: str, s: dict[str, typing.Any], path: str) -> typing.Optional[int]:
    """Detector counter depth from the file's own header, where it states one."""
    om = s.get("original_metadata", {}) or {}
    if reader == "quantumdetector":
        depth = om.get("hdr_file", {}).get("Counter Depth (number)")
        if depth is not None:
            try:
                return int(str(depth).strip())
            except ValueError:
                return None
    if reader == "arina":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                d = f.get("entry/instrument/detector/bit_depth_image")
                return int(d[()]) if d is not None else None
        except OSError:
            return None
    return None


def _plain(md: typing.Any) -> typing.Any:
    """rosettasciio metadata as plain JSON-able values (NumPy scalars and arrays become numbers and lists)."""
    if isinstance(md, dict):
        return {str(k): _plain(v) for k, v in md.items()}
    if isinstance(md, (list, tuple)):
        return [_plain(v) for v in md]
    if isinstance(md, np.generic):
        return md.item()
    if isinstance(md, np.ndarray):
        return md.tolist() if md.size <= 64 else f"array{md.shape}"
    if isinstance(md, (str, int, float, bool)) or md is None:
        return md
    return str(md)
