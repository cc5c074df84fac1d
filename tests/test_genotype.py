"""Genotype type, validation, JSON/text formats, files and the built-in published cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nasbench.errors import GenotypeError, NasError
from nasbench.spaces.darts.genotype import (
    Genotype,
    cell_pairs,
    describe_cell,
    format_genotype_text,
    parse_genotype_text,
    state_name,
    validate,
)
from nasbench.spaces.genotypes import genotype_from_dict, load_genotype, save_genotype
from nasbench.spaces.genotypes import published as published_genotypes

REFERENCE = Path("/work/shared/reference/published-genotypes.txt")
ORIGINAL_NAMES = {
    "darts-v1": "DARTS_V1",
    "darts-v2": "DARTS_V2",
    "pc-darts": "PC_DARTS_cifar",
    "pc-darts-imagenet": "PC_DARTS_image",
    "pdarts": "PDARTS",
    "gdas": "GDAS_V1",
    "gdas-frc": "GDAS_FRC",
    "sgas-cri1": "SGAS_Cri1_CIFAR_Best",
    "sgas-cri2": "SGAS_Cri2_CIFAR_Best",
}
PUBLISHED = {k: g for k, g in published_genotypes().items() if g.space == "darts"}  # the DARTS papers' cells
NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4
REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4


def make(**kw) -> Genotype:
    args = dict(normal=NORMAL, normal_concat=[2, 3, 4, 5], reduce=REDUCE, reduce_concat=[2, 3, 4, 5])
    args.update(kw)
    return Genotype(**args)


def text_of(**kw: str) -> str:
    """``Genotype(...)`` text of :func:`make`'s genotype with some fields' source text replaced."""
    fields = {"normal": str(NORMAL), "normal_concat": "[2, 3, 4, 5]", "reduce": str(REDUCE),
              "reduce_concat": "[2, 3, 4, 5]"}
    fields.update(kw)
    return "Genotype(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


# --- the type ------------------------------------------------------------------------------------


def test_lists_normalised_and_meta_ignored_by_equality():
    a = make(meta={"algorithm": "darts", "epoch": 3})
    b = Genotype(tuple(NORMAL), (2, 3, 4, 5), tuple(REDUCE), (2, 3, 4, 5))
    assert a == b and hash(a) == hash(b)
    assert isinstance(a.normal, tuple) and isinstance(a.normal[0], tuple)
    assert a.meta == {"algorithm": "darts", "epoch": 3}


def test_builtins_registered_and_complete():
    from nasbench import registry

    table = dict(registry.items("genotype"))
    assert set(PUBLISHED) == set(ORIGINAL_NAMES)
    for key, g in PUBLISHED.items():
        assert table[key] == g
        assert g.meta["name"] == ORIGINAL_NAMES[key]
        assert g.meta["source"]
        validate(g)
    assert PUBLISHED["gdas-frc"].reduce is None


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(ORIGINAL_NAMES))
def test_json_round_trip(key, tmp_path):
    g = PUBLISHED[key]
    d = json.loads(json.dumps(g.to_dict()))
    back = Genotype.from_dict(d)
    assert back == g and back.meta == g.meta
    path = save_genotype(g, tmp_path / "g.json")
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "space": "darts"')
    loaded = load_genotype(path)
    assert loaded == g and loaded.meta == g.meta
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temp file left behind


@pytest.mark.parametrize("key", sorted(ORIGINAL_NAMES))
def test_text_round_trip(key):
    g = PUBLISHED[key]
    text = format_genotype_text(g)
    assert text.startswith("Genotype(normal=[('")
    assert parse_genotype_text(text) == g


def test_frc_formats():
    g = PUBLISHED["gdas-frc"]
    assert ", reduce=None, reduce_concat=[2, 3, 4, 5])" in format_genotype_text(g)
    assert g.to_dict()["reduce"] is None
    assert Genotype.from_dict(g.to_dict()).reduce is None
    assert parse_genotype_text(format_genotype_text(g)).reduce is None


def test_meta_round_trip_with_clashing_keys():
    g = make(meta={"algorithm": "pc-darts", "normal": "clash", "meta": {"x": 1}, "epoch": 49})
    d = json.loads(json.dumps(g.to_dict()))
    assert d["algorithm"] == "pc-darts" and d["normal"][0] == ["sep_conv_3x3", 0]
    assert Genotype.from_dict(d).meta == g.meta


def test_from_dict_accepts_missing_space_and_extra_keys():
    d = make().to_dict()
    del d["space"]
    d["run"] = "runs/x"
    g = Genotype.from_dict(d)
    assert g.space == "darts" and g.meta == {"run": "runs/x"}


@pytest.mark.parametrize("concat", ["range(2, 6)", "list(range(2, 6))", "(2, 3, 4, 5)", "[2, 3, 4, 5]"])
def test_concat_forms(concat):
    g = parse_genotype_text(text_of(normal_concat=concat, reduce_concat=concat))
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_positional_and_tuple_forms():
    text = f"Genotype({tuple(NORMAL)!r}, range(2, 6), {REDUCE!r}, [2, 3, 4, 5])"
    assert parse_genotype_text(text) == make()


def test_genotypes_file_with_name():
    text = (
        "from collections import namedtuple\n"
        "Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')\n"
        "PRIMITIVES = ['none', 'sep_conv_3x3']\n\n"
        "# a comment\n"
        f"A = {text_of()}\n"
        f"B = {format_genotype_text(PUBLISHED['darts-v2'])}\n"
        "DARTS = B\n"
    )
    assert parse_genotype_text(text, name="B") == PUBLISHED["darts-v2"]
    assert parse_genotype_text(text, name="DARTS") == PUBLISHED["darts-v2"]
    assert parse_genotype_text(text, name="A") == make()
    with pytest.raises(GenotypeError, match=r"3 genotypes; pick one by name: A, B, DARTS"):
        parse_genotype_text(text)
    with pytest.raises(GenotypeError, match=r"no genotype named 'C'.*A, B, DARTS"):
        parse_genotype_text(text, name="C")


def test_single_named_genotype_with_alias_needs_no_name():
    text = f"X = {text_of()}\nDARTS = X\n"
    assert parse_genotype_text(text) == make()


@pytest.mark.skipif(not REFERENCE.is_file(), reason="reference genotypes file not available")
@pytest.mark.parametrize("key", sorted(ORIGINAL_NAMES))
def test_reference_file_matches_builtins(key):
    text = REFERENCE.read_text()
    g = parse_genotype_text(text, name=ORIGINAL_NAMES[key])
    assert g == PUBLISHED[key]
    assert g.normal_concat == PUBLISHED[key].normal_concat
    assert g.reduce_concat == PUBLISHED[key].reduce_concat


# --- invalid genotypes --------------------------------------------------------------------------


def test_unknown_op_lists_valid_ones():
    bad = [("sep_conv_7x7", 0)] + NORMAL[1:]
    with pytest.raises(GenotypeError, match=r"normal cell, node 2 \(pair 0\): unknown op 'sep_conv_7x7'; "
                                            r"valid ops: max_pool_3x3, .*dil_conv_5x5") as e:
        validate(make(normal=bad))
    assert "none" not in str(e.value).split("valid ops:")[1]


def test_none_op_rejected():
    bad = NORMAL[:5] + [("none", 1)] + NORMAL[6:]
    with pytest.raises(GenotypeError, match=r"normal cell, node 4 \(pair 5\): op 'none' is not allowed"):
        validate(make(normal=bad))


def test_bad_input_index():
    bad = [("sep_conv_3x3", 2)] + NORMAL[1:]
    with pytest.raises(GenotypeError, match=r"normal cell, node 2 \(pair 0\): input 2 is out of range; "
                                            r"node 2 may take inputs 0 \(c_\{k-2\}\), 1 \(c_\{k-1\}\)"):
        validate(make(normal=bad))
    bad_reduce = REDUCE[:7] + [("skip_connect", 6)]
    with pytest.raises(GenotypeError, match=r"reduce cell, node 5 \(pair 7\): input 6 is out of range"):
        validate(make(reduce=bad_reduce))


def test_wrong_pair_count():
    with pytest.raises(GenotypeError, match=r"normal cell: has 6 \(op, input\) pairs; expected 8"):
        validate(make(normal=NORMAL[:6]))


@pytest.mark.parametrize("pair", [("sep_conv_3x3",), ("sep_conv_3x3", "0"), (3, 0), ("sep_conv_3x3", True)])
def test_malformed_pair(pair):
    with pytest.raises(GenotypeError, match=r"expected an \(op name, input index\) pair"):
        validate(make(normal=[pair] + NORMAL[1:]))


@pytest.mark.parametrize("concat, msg", [
    ([], "normal_concat: is empty"),
    ([2, 3, 6], r"normal_concat: index 6 is out of range; valid states are 0\.\.5"),
    ([2, 2], "normal_concat: repeats a state"),
    (["2"], "normal_concat: expected a list of state indices"),
])
def test_bad_concat(concat, msg):
    with pytest.raises(GenotypeError, match=msg):
        validate(make(normal_concat=concat))


def test_other_space_rejected():
    with pytest.raises(GenotypeError, match=r"unsupported search space 'nasbench201'; supported: darts"):
        genotype_from_dict({**make().to_dict(), "space": "nasbench201"})
    with pytest.raises(GenotypeError, match=r"not a darts genotype"):
        validate(make(space="nasbench201"))


def test_from_dict_validates_and_names_missing_keys():
    d = make().to_dict()
    d["normal"][0][0] = "conv_9x9"
    with pytest.raises(GenotypeError, match="unknown op 'conv_9x9'"):
        Genotype.from_dict(d)
    with pytest.raises(GenotypeError, match="missing 'reduce', 'reduce_concat'"):
        Genotype.from_dict({"normal": [], "normal_concat": []})
    with pytest.raises(GenotypeError, match="must be a JSON object"):
        Genotype.from_dict([1, 2])


def test_genotype_error_is_nas_error():
    assert issubclass(GenotypeError, NasError)


# --- text that is not a plain literal -----------------------------------------------------------


@pytest.mark.parametrize("text, detail", [
    (text_of(normal="__import__('os').system('true')"), r"a call to __import__\('os'\)\.system"),
    (text_of(normal_concat="[2, 3] + [4, 5]"), "arithmetic"),
    (text_of(normal_concat="os.path"), "attribute access"),
    (text_of(reduce="REDUCE"), "the name 'REDUCE'"),
    (text_of(normal_concat="range(2, len('abcdef'))"), "a call to len"),
    (f"__import__('os').system('true')\nX = {text_of()}", r"a call to __import__"),
    (f"import os\nos.system('true')\nX = {text_of()}", r"a call to os\.system"),
    (f"X = {text_of()}\ndef f():\n    pass\n", "FunctionDef"),
])
def test_code_is_rejected_not_run(text, detail):
    with pytest.raises(GenotypeError, match="genotype text is not evaluated as code; only literals are allowed") as e:
        parse_genotype_text(text)
    assert re.search(detail, str(e.value)), str(e.value)


def test_parse_errors_are_clear():
    with pytest.raises(GenotypeError, match="syntax error at line 2"):
        parse_genotype_text("# header\nGenotype(normal=[('sep_conv_3x3', 0)\n")
    with pytest.raises(GenotypeError, match="no Genotype"):
        parse_genotype_text("X = 1\n")
    with pytest.raises(GenotypeError, match="unknown field 'extra'"):
        parse_genotype_text(text_of(extra="1"))
    with pytest.raises(GenotypeError, match="missing reduce_concat"):
        parse_genotype_text(f"Genotype(normal={NORMAL}, normal_concat=[2], reduce=None)")
    with pytest.raises(GenotypeError, match="input 3 is out of range"):
        parse_genotype_text(text_of(normal=str([("sep_conv_3x3", 3)] + NORMAL[1:])))
    with pytest.raises(GenotypeError, match=r"expected an \(op, input\) pair, got 3 items"):
        parse_genotype_text(text_of(normal="[('sep_conv_3x3', 0, 1)]"))


# --- files --------------------------------------------------------------------------------------


def test_load_directory_with_best_json(tmp_path):
    g = PUBLISHED["pc-darts"].with_meta(algorithm="pc-darts", epoch=49)
    save_genotype(g, tmp_path / "best.json")
    loaded = load_genotype(tmp_path)
    assert loaded == g and loaded.meta["epoch"] == 49
    assert load_genotype(str(tmp_path)) == g


def test_load_directory_without_best_json(tmp_path):
    with pytest.raises(GenotypeError, match="has no best.json"):
        load_genotype(tmp_path)


def test_load_text_file(tmp_path):
    path = tmp_path / "genotypes.py"
    path.write_text(f"# searched cell\nMY_CELL = {format_genotype_text(PUBLISHED['sgas-cri1'])}\n")
    assert load_genotype(path) == PUBLISHED["sgas-cri1"]
    path.write_text(f"A = {text_of()}\nB = {text_of()}\n")
    with pytest.raises(GenotypeError, match=r"genotypes\.py: the text holds 2 genotypes"):
        load_genotype(path)


def test_load_builtin_name():
    g = load_genotype("darts-v2")
    assert g == PUBLISHED["darts-v2"]
    g.meta["x"] = 1  # callers cannot alter the built-in
    assert "x" not in load_genotype("darts-v2").meta


def test_bad_json_names_file_and_position(tmp_path):
    path = tmp_path / "g.json"
    path.write_text('{\n  "space": "darts",\n  "normal": [,]\n}\n')
    with pytest.raises(GenotypeError, match=r"g\.json: invalid JSON at line 3, column 14"):
        load_genotype(path)


def test_invalid_genotype_in_json_names_file(tmp_path):
    d = make().to_dict()
    d["reduce"] = d["reduce"][:3]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(d))
    with pytest.raises(GenotypeError, match=r"g\.json: reduce cell: has 3 \(op, input\) pairs"):
        load_genotype(path)


def test_missing_file_lists_builtins(tmp_path):
    with pytest.raises(GenotypeError, match=r"no such genotype file or built-in name: .*nope\.json; "
                                            r"built-in names: darts-v1, darts-v2, .*sgas-cri2"):
        load_genotype(tmp_path / "nope.json")
    with pytest.raises(GenotypeError, match="no such genotype file or built-in name: darts-v3"):
        load_genotype("darts-v3")


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "sub" / "best.json"
    save_genotype(make(), path)
    save_genotype(PUBLISHED["gdas"], path)
    assert load_genotype(path) == PUBLISHED["gdas"]
    assert json.loads(path.read_text())["reduce"][0] == ["sep_conv_5x5", 0]


# --- display helpers ----------------------------------------------------------------------------


def test_describe_cell_and_state_names():
    rows = describe_cell(PUBLISHED["darts-v2"].normal)
    assert rows[0] == (0, "sep_conv_3x3", 0)
    assert rows[-1] == (3, "dil_conv_3x3", 2)
    assert len(rows) == 8
    assert [state_name(i) for i in range(6)] == ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3"]
    assert cell_pairs(PUBLISHED["gdas-frc"], "reduce") is None
    with pytest.raises(GenotypeError, match="unknown cell"):
        cell_pairs(PUBLISHED["gdas"], "both")
