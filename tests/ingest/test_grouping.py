"""Files of one acquisition uploaded together are grouped by name stem, with the right primary."""

from __future__ import annotations

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
