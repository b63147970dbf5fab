"""``diffsci dock``: dock a ligand (or a library) into a receptor box with bio.dock (batched Monte Carlo + BFGS on
AutoDock Vina's score).

    diffsci dock receptor.pdb ligand.sdf --center X Y Z --size SX SY SZ [--exhaustiveness 8] [--num_modes 9]
                 [--seed 0] [--device cpu] --out poses.sdf [--pdbqt poses.pdbqt]
    diffsci dock receptor.pdb --ligands library.sdf|library.smi --center X Y Z --size SX SY SZ --out poses.sdf
                 [--csv ranked.csv]

Scores in kcal/mol, as Vina reports them; the box in Å. A single ligand prints Vina's results table (mode,
affinity, rmsd l.b. to the top pose) and writes the poses to --out (SDF, scores as properties). A library
(SDF records, or SMILES lines "SMILES [name]") is docked ligand by ligand with the same seed each, and ends with
a CSV ranked by the best score (--csv, default the --out name with .csv) and every ligand's top pose in --out,
in rank order. Library runs are resumable: each finished ligand is kept in OUT.parts/ and skipped when the same
command runs again, so a rerun's final table equals an uninterrupted run's.

Bad input (a missing or unreadable file, a bad SDF record or SMILES line, an option out of range) ends with exit
code 1 and a one-line message naming it. `bio` is imported only when the job runs.
"""

import csv
import os
import sys

HELP = "dock ligands into a receptor box (batched Monte Carlo + BFGS on AutoDock Vina's score)"
EXAMPLE = """diffsci dock receptor.pdb ligand.sdf --center 10 12 -3 --size 22 22 22 --out poses.sdf
         diffsci dock receptor.pdb --ligands library.smi --center 10 12 -3 --size 22 22 22 --out hits.sdf"""

_OPTIONS = {"center": "--center", "box_size": "--size", "exhaustiveness": "--exhaustiveness",
            "num_poses": "--num_modes", "seed": "--seed", "device": "--device"}
_COLUMNS = ("rank", "index", "name", "smiles", "score", "inter", "intra", "num_poses")


def add_arguments(parser):
    parser.add_argument("receptor", help="receptor: PDB/PDBx (prepared with PDBFixer at --ph) or PDBQT")
    parser.add_argument("ligand", nargs="?", help="ligand SD file (one record) or MOL2")
    parser.add_argument("--ligands", help="a library: an SD file (one ligand a record) or a .smi file")
    parser.add_argument("--center", type=float, nargs=3, required=True, metavar=("X", "Y", "Z"),
                        help="box center, Å")
    parser.add_argument("--size", type=float, nargs=3, required=True, metavar=("SX", "SY", "SZ"),
                        help="box edge lengths, Å")
    parser.add_argument("--exhaustiveness", type=int, default=8, help="Vina's exhaustiveness (default 8)")
    parser.add_argument("--num_modes", "--num-poses", "--num-modes", dest="num_modes", type=int, default=9,
                        help="most poses per ligand (default 9)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--ph", type=float, default=7.4, help="pH for the receptor's hydrogens (default 7.4)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, ...")
    parser.add_argument("--out", required=True, help="SD file of the poses")
    parser.add_argument("--pdbqt", help="also write the poses as PDBQT (single ligand)")
    parser.add_argument("--csv", help="ranked table of a library (default: --out with .csv)")


def run(args):
    import bio

    try:
        return _run(args)
    except bio.ArgumentError as error:
        option = _OPTIONS.get(error.argument)
        return _fail(error.message(option) if option else str(error))
    except (bio.BioError, ValueError, OSError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted" + ("; finished ligands are kept: run the same command again to resume"
                                      if args.ligands else ""), 130)


def _fail(message, code=1):
    print("diffsci dock: error: " + " ".join(message.split()), file=sys.stderr)
    return code


def _run(args):
    import bio
    from bio import checks

    if (args.ligand is None) == (args.ligands is None):
        return _fail("give one ligand file or --ligands LIBRARY (not both, not neither)")
    checks.integer("exhaustiveness", args.exhaustiveness, low=1)
    checks.integer("num_poses", args.num_modes, low=1)
    checks.seed(args.seed)
    checks.device(args.device)
    if any(s <= 0 for s in args.size):
        return _fail(f"--size must be three positive lengths in Å, got {' '.join(map(str, args.size))}")
    for option in ("out", "pdbqt", "csv"):
        path = getattr(args, option)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return _fail(f"--{option} {path}: the directory {os.path.dirname(os.path.abspath(path))} does not exist")
    for path, what in ((args.receptor, "receptor"), (args.ligand, "ligand"), (args.ligands, "--ligands")):
        if path is not None and not os.path.isfile(path):
            return _fail(f"{what} {path}: no such file")
    ligands = _library(args.ligands) if args.ligands else None
    ligand = None if ligands else _single(args.ligand)
    receptor = _receptor(args.receptor, args.ph)
    options = dict(center=args.center, box_size=args.size, exhaustiveness=args.exhaustiveness,
                   num_poses=args.num_modes, seed=args.seed, device=args.device)
    if ligand is not None:
        result = bio.dock(receptor, ligand, progress=True, **options)
        _table(result)
        result.write_sdf(args.out)
        if args.pdbqt:
            result.write_pdbqt(args.pdbqt)
        print(f"wrote {args.out}" + (f" and {args.pdbqt}" if args.pdbqt else ""))
        return 0
    return _screen(args, receptor, ligands, options)


def _receptor(path, ph):
    import warnings

    import bio

    if path.lower().endswith(".pdbqt"):
        return bio.Receptor.from_pdbqt(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bio.Receptor.from_pdb(path, ph=ph)


def _single(path):
    import warnings

    import bio

    if path.lower().endswith(".mol2"):
        return bio.Ligand.from_mol2(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            ligands = bio.Ligand.from_sdf(path)
        except UserWarning as warning:
            raise bio.LigandError(str(warning)) from None
    if len(ligands) != 1:
        raise bio.LigandError(f"{path}: {len(ligands)} records; dock a library with --ligands {path}")
    return ligands[0]


def _library(path):
    """The library's ligands as (name, smiles, Ligand); raises LigandError naming the first bad record."""
    import bio
    from rdkit import Chem

    out = []
    if path.lower().endswith((".smi", ".smiles", ".txt")):
        with open(path) as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                name = fields[1] if len(fields) > 1 else f"ligand{number}"
                try:
                    ligand = bio.Ligand.from_smiles(fields[0], name=name)
                except bio.LigandError as error:
                    raise bio.LigandError(f"{path}, line {number}: {error}") from None
                out.append((name, fields[0], ligand))
    else:
        for number, mol in enumerate(Chem.SDMolSupplier(path, removeHs=False), start=1):
            if mol is None or mol.GetNumConformers() == 0:
                raise bio.LigandError(f"{path}, record {number}: cannot be parsed (a bad SD record)")
            ligand = bio.Ligand.from_rdkit(mol)
            name = ligand.name or f"ligand{number}"
            out.append((name, Chem.MolToSmiles(Chem.RemoveHs(mol)), ligand))
    if not out:
        raise bio.LigandError(f"{path}: no ligands")
    return out


def _table(result):
    print("mode |   affinity | inter      | intra      | rmsd l.b.")
    print("     | (kcal/mol) | (kcal/mol) | (kcal/mol) | (Å)")
    print("-----+------------+------------+------------+----------")
    for k in range(len(result)):
        print(f"{k + 1:4d} | {float(result.scores['total'][k]):10.3f} | {float(result.scores['inter'][k]):10.3f} | "
              f"{float(result.scores['intra'][k]):10.3f} | {float(result.rmsd_lb[k]):8.3f}")


def _screen(args, receptor, ligands, options):
    import bio
    from rdkit import Chem
    from tqdm.auto import tqdm

    parts = args.out + ".parts"
    os.makedirs(parts, exist_ok=True)
    rows = {}
    for index, (name, smiles, ligand) in enumerate(tqdm(ligands, desc="dock", unit="ligand"), start=1):
        part = os.path.join(parts, f"{index}.sdf")
        row_path = os.path.join(parts, f"{index}.csv")
        if not (os.path.isfile(part) and os.path.isfile(row_path)):      # finished ligands are skipped
            result = bio.dock(receptor, ligand, **options)
            result.write_sdf(part + ".tmp")
            with open(row_path + ".tmp", "w", newline="") as handle:
                csv.writer(handle).writerow([index, name, smiles, f"{float(result.scores['total'][0]):.3f}",
                                             f"{float(result.scores['inter'][0]):.3f}",
                                             f"{float(result.scores['intra'][0]):.3f}", len(result)])
            os.replace(part + ".tmp", part)          # the pose file first: a row exists only with its poses
            os.replace(row_path + ".tmp", row_path)
        with open(row_path, newline="") as handle:
            rows[index] = next(csv.reader(handle))
    ranked = sorted(rows.values(), key=lambda row: (float(row[3]), int(row[0])))
    table = args.csv or os.path.splitext(args.out)[0] + ".csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_COLUMNS)
        for rank, row in enumerate(ranked, start=1):
            writer.writerow([rank] + row)
    writer = Chem.SDWriter(args.out)
    for row in ranked:
        mol = next(iter(Chem.SDMolSupplier(os.path.join(parts, f"{row[0]}.sdf"), removeHs=False)))
        writer.write(mol)
    writer.close()
    print(f"{'rank':>4s}  {'score':>8s}  name")
    for rank, row in enumerate(ranked, start=1):
        print(f"{rank:4d}  {float(row[3]):8.3f}  {row[1]}")
    print(f"wrote {table} and {args.out} (kcal/mol)")
    return 0
