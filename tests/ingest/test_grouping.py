"""Files of one acquisition uploaded together are grouped by name stem, with the right primary."""

from __future__ import annotations

from pathlib import Path

from allmicro_data.ingest.grouping import group_files


def _as_tuples(names: list[str]) -> list[tuple[str, list[str]]]:
    return [(g.primary, g.companions) for g in group_files(names)]


def test_emi_is_primary_and_ser_files_its_companions() -> None:
    names = ["acq_1.ser", "acq.emi", "acq_2.ser"]
    assert _as_tuples(names) == [("acq.emi", ["acq_1.ser", "acq_2.ser"])]


def test_mrc_takes_its_mdoc_and_hitachi_tif_its_txt() -> None:
    names = ["tomo.mrc", "tomo.mrc.mdoc", "sem01.tif", "sem01.txt"]
    assert _as_tuples(names) == [("tomo.mrc", ["tomo.mrc.mdoc"]), ("sem01.tif", ["sem01.txt"])]


def test_direct_electron_dataset_groups_under_the_movie() -> None:
    names = [
        "20241021_00405_final.mrc",
        "20241021_00405_info.txt",
        "20241021_00405_movie.mrc",
        "20241021_00405_0_Virt 0_sum.mrc",
    ]
    groups = group_files(names)
    assert len(groups) == 1
    assert groups[0].primary == "20241021_00405_movie.mrc"
    assert set(groups[0].companions) == set(names) - {"20241021_00405_movie.mrc"}


def test_unrelated_images_with_one_stem_stay_separate_and_lone_sidecars_stay_visible() -> None:
    names = ["a.tif", "a.mrc", "notes.txt"]
    primaries = [g.primary for g in group_files(names)]
    assert sorted(primaries) == ["a.mrc", "a.tif", "notes.txt"]


def test_vendor_names_alone_give_one_acquisition_key_and_say_what_is_missing() -> None:
    from allmicro_data.ingest.grouping import acquisition_key, missing_members

    assert acquisition_key("acq_1.ser") == acquisition_key("ACQ.emi") is not None
    de = ["20241021_00405_info.txt", "20241021_00405_movie.mrc", "20241021_00405_final.mrc"]
    assert len({acquisition_key(n) for n in de}) == 1
    assert acquisition_key("tomo.mrc.mdoc") == acquisition_key("tomo.mrc") is not None
    assert acquisition_key("scan.hdr") == acquisition_key("scan.mib") is not None
    # Common names join nothing by themselves.
    assert acquisition_key("sem01.txt") is None and acquisition_key("cells.tif") is None
    assert missing_members(["acq_1.ser"]) == ["FEI TIA emi of acq"]
    assert missing_members(["acq.emi", "acq_1.ser"]) == []
    assert missing_members(["20241021_00405_movie.mrc"]) == [
        "Direct Electron DE-Server info of 20241021_00405"
    ]
    # A plain MRC needs no .mdoc; an .mdoc needs its stack.
    assert missing_members(["tomo.mrc"]) == [] and missing_members(["tomo.mrc.mdoc"]) != []


def test_companions_found_beside_a_file_are_those_it_is_read_with(tmp_path: Path) -> None:
    from allmicro_data.ingest.grouping import find_companions

    names = ["s_movie.mrc", "s_final.mrc", "s_info.txt", "x.emi", "x_1.ser", "other.tif"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = {n: sorted(c.name for c in find_companions(tmp_path / n)) for n in names}
    assert found["s_movie.mrc"] == ["s_final.mrc", "s_info.txt"]
    # The sum asked about stays what is read: the movie beside it is not pulled in.
    assert found["s_final.mrc"] == ["s_info.txt"]
    # A .ser is read with its .emi, which then is the image (TIA keeps the metadata there).
    assert found["x_1.ser"] == ["x.emi"] and found["x.emi"] == ["x_1.ser"]
    assert found["other.tif"] == []
