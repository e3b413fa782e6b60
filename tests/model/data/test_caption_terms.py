"""The shared reading of caption text for object and concept words."""
from __future__ import annotations

import pytest

from altbeam.model.data.caption_terms import TermTable, plural_forms, read_term_table


@pytest.mark.parametrize("word, plurals", [
    ("dog", ("dogs",)), ("bus", ("buses", "busses")), ("box", ("boxes",)),
    ("sandwich", ("sandwiches",)), ("pony", ("ponies",)), ("toy", ("toys",)),
    ("knife", ("knives",)), ("giraffe", ("giraffes",)), ("person", ("people", "persons")),
    ("child", ("children",)), ("sheep", ("sheep",)), ("tomato", ("tomatos", "tomatoes")),
    ("scissors", ()),
])
def test_plural_forms(word, plurals):
    assert plural_forms(word) == plurals


def test_longest_match_blockers_and_plurals():
    table = TermTable({"dog": ["puppy"], "hot dog": ["hotdog"], "bed": [], "glasses": ["goggles"],
                       "glass": []}, blockers=["flower bed"])
    mentions = table.mentions("Two puppies, hot-dogs, a dog's bed and a flower bed.")
    assert [(m.words, m.term, m.start) for m in mentions] == [
        ("puppies", "dog", 1), ("hot dogs", "hot dog", 2), ("dogs", "dog", 5), ("bed", "bed", 6)]
    assert table.names("hot dog and dog and hotdog") == ["hot dog", "dog"]
    # an explicit form beats another term's generated plural
    assert table.names("glasses on a glass") == ["glasses", "glass"]
    assert table.surface_of("hot dog") == ["hot dog", "hot dogs", "hotdog", "hotdogs"]


def test_qualifiers_and_modifier_homonyms():
    table = TermTable({"person": ["baby", "mother", "passenger"], "elephant": [],
                       "train": [], "orange": [], "cat": []})
    assert table.names("a mother elephant and her baby") == ["elephant", "person"]
    assert table.names("passengers board a passenger train") == ["person", "train"]
    assert table.names("a baby with an orange") == ["person", "orange"]
    assert table.names("an orange and white cat") == ["cat"]
    assert table.names("an orange and a cat") == ["orange", "cat"]
    assert table.names("orange slices next to an orange sitting on a table") == ["orange"]
    assert table.names("an orange shirt") == []
    glass = TermTable({"glass": ["wine glass"], "bowl": []})
    assert glass.names("a glass bowl") == ["bowl"]
    assert glass.names("a glass of wine and wine glasses") == ["glass"]


def test_conflicting_tables_are_refused(tmp_path):
    with pytest.raises(ValueError, match="claimed by both 'cat' and 'dog'"):
        TermTable({"cat": ["pet"], "dog": ["pet"]})
    with pytest.raises(ValueError, match="empty term"):
        TermTable({"cat": ["..."]})
    tsv = tmp_path / "terms.tsv"
    tsv.write_text("# comment\ncat\tkitten, kitty\n-\tcat food\n\ndog\t\n")
    table = read_term_table(tsv)
    assert table.terms == ("cat", "dog")
    assert table.names("kitty eats cat food, dog") == ["cat", "dog"]
    tsv.write_text("cat\tkitten\ncat\tkitty\n")
    with pytest.raises(ValueError, match="repeated"):
        read_term_table(tsv)
