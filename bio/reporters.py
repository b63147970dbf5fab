"""Reporters for `bio.Simulation`, after OpenMM's: energies and temperature as CSV, trajectories as PDB or DCD
(written by OpenMM's own `PDBFile` and `DCDFile`, so every tool that reads OpenMM output reads these).

A reporter has `report_interval` (steps) and `report(simulation)`; the simulation calls it after each step
that is a multiple of the interval. Reporters given a path open (and own) the file; call `close()` when done
(or use them as context managers). Given an open file they write to it and leave closing to the caller.
"""

import openmm.app as app
import openmm.unit as unit

from . import checks
from .errors import ArgumentError


class _Reporter:
    def __init__(self, file, report_interval, mode):
        self.report_interval = check_interval(report_interval, type(self).__name__)
        self._own = isinstance(file, (str, bytes)) or hasattr(file, "__fspath__")
        if not self._own and not hasattr(file, "write"):
            raise ArgumentError("file", file, "a path or an open file", type(self).__name__)
        self._out = open(file, mode) if self._own else file

    def close(self):
        if self._own and not self._out.closed:
            self._out.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StateDataReporter(_Reporter):
    """Comma-separated state data, OpenMM's StateDataReporter columns and header.

    file: path or open text file (e.g. sys.stdout). Columns, in this order, each off by default as in OpenMM:
    step, time (ps), potential_energy, kinetic_energy, total_energy (kJ/mol), temperature (K). For a batch of
    replicas each report writes one line per replica, after a leading "Replica" column. append: add to an
    existing file without writing the header again (OpenMM's `append`; for a resumed run).
    """

    _COLUMNS = (("step", '"Step"'), ("time", '"Time (ps)"'),
                ("potential_energy", '"Potential Energy (kJ/mole)"'),
                ("kinetic_energy", '"Kinetic Energy (kJ/mole)"'), ("total_energy", '"Total Energy (kJ/mole)"'),
                ("temperature", '"Temperature (K)"'))

    def __init__(self, file, report_interval, step=False, time=False, potential_energy=False, kinetic_energy=False,
                 total_energy=False, temperature=False, separator=",", append=False):
        checks.flag("append", append, type(self).__name__)
        super().__init__(file, report_interval, "a" if append else "w")
        wanted = {"step": step, "time": time, "potential_energy": potential_energy,
                  "kinetic_energy": kinetic_energy, "total_energy": total_energy, "temperature": temperature}
        self._columns = [(name, title) for name, title in self._COLUMNS if wanted[name]]
        self._separator = separator
        self._header_written = append

    def report(self, simulation):
        potential = simulation.potential_energy
        kinetic = simulation.kinetic_energy()
        values = {"potential_energy": potential, "kinetic_energy": kinetic, "total_energy": potential + kinetic,
                  "temperature": simulation.temperature()}
        batched = potential.dim() == 1
        if not self._header_written:
            titles = (['"Replica"'] if batched else []) + [title for _, title in self._columns]
            self._out.write("#" + self._separator.join(titles) + "\n")
            self._header_written = True
        rows = range(potential.shape[0]) if batched else [None]
        for replica in rows:
            fields = [str(replica)] if batched else []
            for name, _ in self._columns:
                if name == "step":
                    fields.append(str(simulation.current_step))
                elif name == "time":
                    fields.append(f"{simulation.time:.10g}")
                else:
                    value = values[name] if replica is None else values[name][replica]
                    fields.append(repr(float(value)))
            self._out.write(self._separator.join(fields) + "\n")
        self._out.flush()


class _TrajectoryReporter(_Reporter):
    def __init__(self, file, report_interval, mode, replica):
        if replica is not None:
            checks.integer("replica", replica, low=0, owner=type(self).__name__)
        super().__init__(file, report_interval, mode)
        self._replica = replica

    def _frame(self, simulation):
        """(topology, positions as an (N, 3) numpy array in nm) of the frame to write."""
        topology = simulation.system.topology
        if topology is None:
            raise ValueError(f"{type(self).__name__} needs the system's topology: build the System with "
                             "System.from_pdb, or pass topology= to System.from_openmm.")
        positions = simulation.positions
        if positions.dim() == 3:
            if self._replica is None:
                raise ValueError(f"{type(self).__name__}: the simulation runs {positions.shape[0]} replicas; pass "
                                 "replica=<index> to choose the one to write.")
            positions = positions[self._replica]
        return topology, positions.detach().cpu().numpy()


class PDBReporter(_TrajectoryReporter):
    """A multi-model PDB trajectory (OpenMM's PDBFile writer). file: path or open text file. replica: which
    replica to write when the simulation runs a batch. `close()` writes the final END record."""

    def __init__(self, file, report_interval, replica=None):
        super().__init__(file, report_interval, "w", replica)
        self._models = 0
        self._topology = None

    def report(self, simulation):
        topology, positions = self._frame(simulation)
        if self._models == 0:
            app.PDBFile.writeHeader(topology, self._out)
            self._topology = topology
        self._models += 1
        app.PDBFile.writeModel(topology, positions * unit.nanometer, self._out, self._models)
        self._out.flush()

    def close(self):
        if self._models and not self._out.closed:
            app.PDBFile.writeFooter(self._topology, self._out)
            self._models = 0
        super().close()


class DCDReporter(_TrajectoryReporter):
    """A DCD trajectory (OpenMM's DCDFile writer; coordinates stored in Angstrom as float32, with the periodic
    box when the system has one). file: path or open binary file. append: add frames to an existing DCD file
    (to continue a run resumed from a checkpoint). replica: which replica to write for a batch."""

    def __init__(self, file, report_interval, append=False, replica=None):
        super().__init__(file, report_interval, "r+b" if append else "wb", replica)
        self._append = append
        self._dcd = None

    def report(self, simulation):
        topology, positions = self._frame(simulation)
        if self._dcd is None:
            self._dcd = app.DCDFile(self._out, topology, simulation.integrator.step_size,
                                    simulation.current_step, self.report_interval, self._append)
        box = simulation.system.box_vectors
        self._dcd.writeModel(positions * unit.nanometer,
                             periodicBoxVectors=None if box is None else box.cpu().numpy() * unit.nanometer)
        self._out.flush()


class CheckpointReporter:
    """Writes `simulation.save_checkpoint(file)` every `report_interval` steps, so a run can resume."""

    def __init__(self, file, report_interval):
        self.file, self.report_interval = file, check_interval(report_interval, "CheckpointReporter")

    def report(self, simulation):
        simulation.save_checkpoint(self.file)

    def close(self):
        pass


def check_interval(report_interval, owner=None):
    """report_interval checked to be an integer >= 1 (steps); raises ArgumentError."""
    return checks.integer("report_interval", report_interval, low=1, unit="(steps)", owner=owner)


__all__ = ["StateDataReporter", "PDBReporter", "DCDReporter", "CheckpointReporter", "check_interval"]
