import random

import pytest

from nemo_latent_thoughts.data.chunking import WINDOW, chunk_text, sentence_ends


@pytest.mark.parametrize("text", [
    "One. Two. Three.",
    "\n\nLeading newlines. And a second sentence.\n\n\nTrailing whitespace.  \n\n",
    "No terminal punctuation at all",
    "Dr. Smith met e.g. Mr. Jones.\r\nWindows line.\tTabs! Questions? Yes.",
    "   ",
    "数学很有趣。它也很难。\nÜber alles. 😀 Emoji.",
])
def test_chunks_concatenate_back_exactly(text):
    for seed in range(5):
        for mean in (0.0, 1.0, 7.0):
            chunks = chunk_text(text, seed, mean_sentences=mean)
            assert "".join(chunks) == text
            assert all(chunks)


def test_chunk_sizes_follow_one_plus_poisson_capped():
    text = " ".join(f"Sentence number {i}." for i in range(20000))
    assert len(list(sentence_ends(text))) == 20000
    chunks = chunk_text(text, seed=0, mean_sentences=7.0, max_sentences=20)
    sizes = [c.count(".") for c in chunks]
    assert min(sizes) >= 1 and max(sizes) <= 20
    assert 7.6 < sum(sizes) / len(sizes) < 8.4  # mean of min(1 + Poisson(7), 20) is ~8.0
    capped = chunk_text(text, seed=0, mean_sentences=50.0, max_sentences=20)
    assert max(c.count(".") for c in capped) == 20


def test_same_text_same_chunks_whatever_the_context():
    texts = [f"Doc {i}. " + " ".join(f"S{j}." for j in range(i % 30 + 1)) for i in range(50)]
    first = {t: chunk_text(t, seed=3) for t in texts}
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    assert {t: chunk_text(t, seed=3) for t in shuffled} == first
    assert any(chunk_text(t, seed=4) != first[t] for t in texts)  # the global seed matters


def test_huge_document_round_trips():
    text = ("Let a = 3 and b = 4. Then a*b = 12. " * 2000 + "\n") * 40  # ~2.9 MB, 160k sentences
    chunks = chunk_text(text, seed=1)
    assert "".join(chunks) == text and len(chunks) > 15000


def test_windows_find_the_sentences_punkt_finds_in_the_whole_paragraph():
    words = ('the a of Dr. Mr. e.g. i.e. U.S. cat dog 3.5 1. (see) "quoted." \'yes.\' Ok! why? no... A. B. '
             '-- end.) [x.]').split()
    rng = random.Random(0)
    compared = 0
    for _ in range(300):
        text = " ".join(rng.choice(words) + rng.choice(["", "", ".", "!", "?", '."', ".)"])
                        for _ in range(rng.randint(1, 400)))
        whole = list(sentence_ends(text, window=10**9))
        longest = max(b - a for a, b in zip([0] + whole, whole))
        for window in (50, 200, 1000):
            if window > 2 * longest + 20:  # no sentence longer than half a window: no cut either
                compared += 1
                assert list(sentence_ends(text, window=window)) == whole, (window, text)
    assert compared > 500


@pytest.mark.parametrize("text", [
    " ".join(["word"] * 100_000),      # no sentence end at all
    "x" * 300_000,                     # no whitespace either
    "Short one. " + "y" * 150_000 + " then words without end " * 5000,
])
def test_text_without_sentence_ends_is_cut_into_window_sized_sentences(text):
    ends = list(sentence_ends(text))
    assert max(len(text[a:b].strip()) for a, b in zip([0] + ends, ends)) <= WINDOW
    chunks = chunk_text(text, seed=0, mean_sentences=0.0)
    assert "".join(chunks) == text and len(chunks) == len(ends)
