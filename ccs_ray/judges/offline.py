"""The offline judge: deterministic, network-free, and a heuristic (every row it makes says so).

A vocabulary maps concept labels to keywords. A span *matches* a concept when one of its keywords occurs
in it as a word (plural ``s``/``es`` allowed) or, given a ``text_encoder`` (the analysed CLIP's L2-normalised
text embeddings), when its cosine with the concept's prototype (mean keyword embedding) reaches a
calibrated threshold. The threshold is the one that best separates every keyword from the other concepts'
keywords (leave-one-out prototypes); when that separation is poor (balanced accuracy < ``MIN_SEPARATION``,
e.g. a random-init model) the embedding signal is switched off and only the words count.
Label = the concept matched by most of the paper spans (ties: higher summed cosine, then vocabulary
order); ``NO_CONCEPT`` when no span matches any. A span is aligned when it matches the label's concept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from .headspans import HeadSpans, Verdict

NO_CONCEPT = "none"
MIN_SEPARATION = 0.8

DEFAULT_VOCABULARY: dict[str, list[str]] = {
    "colors": ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray",
               "grey", "violet", "turquoise", "teal", "beige", "golden", "silver", "colorful", "colourful",
               "color", "colour", "monochrome", "pastel", "neon", "crimson", "magenta", "cyan"],
    "shapes": ["circle", "circular", "round", "square", "triangle", "triangular", "rectangle", "rectangular",
               "oval", "star", "hexagon", "spiral", "curve", "curved", "line", "stripe", "striped", "dot",
               "dotted", "grid", "geometric", "cube", "sphere", "cone", "zigzag", "shape"],
    "textures": ["texture", "textured", "rough", "smooth", "fur", "furry", "fluffy", "wooden", "wood", "metal",
                 "metallic", "leather", "fabric", "wool", "woolen", "silk", "glossy", "matte", "grainy",
                 "knitted", "pattern", "patterned", "marble", "brick", "velvet", "rusty", "shiny"],
    "counting": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "dozen",
                 "pair", "couple", "trio", "single", "double", "triple", "multiple", "several", "many",
                 "group", "number", "numbers", "count", "crowd", "twins"],
    "letters": ["letter", "text", "word", "words", "writing", "written", "alphabet", "font", "typography",
                "sign", "signage", "caption", "handwriting", "handwritten", "logo", "label", "poster",
                "newspaper", "book", "page", "calligraphy", "inscription"],
    "location": ["city", "town", "village", "country", "street", "paris", "london", "tokyo", "new york",
                 "rome", "africa", "asia", "europe", "america", "india", "china", "japan", "france", "italy",
                 "egypt", "brazil", "mexico", "australia", "canada", "russia", "germany", "spain", "skyline",
                 "landmark", "capital", "region", "downtown", "neighborhood", "rio", "marrakech", "dubai",
                 "istanbul", "swiss", "taken in", "aerial"],
    "animals": ["animal", "dog", "puppy", "cat", "kitten", "bird", "horse", "cow", "sheep", "goat", "pig",
                "lion", "tiger", "bear", "elephant", "giraffe", "zebra", "monkey", "fish", "shark", "whale",
                "dolphin", "snake", "lizard", "frog", "insect", "butterfly", "bee", "spider", "rabbit", "mouse",
                "deer", "fox", "wolf", "owl", "eagle", "parrot", "duck", "chicken", "penguin", "turtle"],
    "objects": ["object", "chair", "table", "cup", "mug", "bottle", "lamp", "phone", "laptop", "computer",
                "clock", "watch", "key", "bag", "box", "tool", "hammer", "scissors", "pen", "pencil", "vase",
                "bowl", "plate", "knife", "spoon", "umbrella", "ball", "toy", "camera", "guitar", "sofa", "bed",
                "mirror", "shoe", "hat", "glasses"],
    "people": ["person", "people", "man", "men", "woman", "women", "child", "children", "kid", "baby", "boy",
               "girl", "face", "portrait", "family", "friend", "friends", "crowd", "worker", "athlete",
               "player", "doctor", "teacher", "student", "elderly", "couple"],
    "art style": ["painting", "painted", "drawing", "sketch", "illustration", "cartoon", "anime", "comic",
                  "watercolor", "watercolour", "oil", "pixel", "pixelated", "art", "artwork", "artistic",
                  "abstract", "impressionist", "surreal", "vintage", "retro", "style", "render", "3d",
                  "digital", "mosaic", "graffiti", "photorealistic", "minimalist"],
    "food": ["food", "meal", "dish", "pizza", "burger", "sandwich", "salad", "soup", "ramen", "noodle", "pasta",
             "rice", "sushi", "bread", "cake", "cookie", "dessert", "fruit", "apple", "banana", "vegetable",
             "cheese", "meat", "steak", "coffee", "tea", "wine", "beer", "breakfast", "dinner", "candy"],
    "vehicles": ["car", "truck", "bus", "train", "tram", "bicycle", "bike", "motorcycle", "airplane", "plane",
                 "aircraft", "helicopter", "boat", "ship", "yacht", "vehicle", "taxi", "van", "tractor",
                 "scooter", "subway", "automobile", "jeep", "rocket"],
    "nature": ["nature", "forest", "tree", "trees", "mountain", "mountains", "river", "lake", "ocean", "sea",
               "beach", "desert", "field", "meadow", "garden", "flower", "flowers", "grass", "sky", "cloud",
               "clouds", "sunset", "sunrise", "waterfall", "landscape", "island", "jungle", "valley", "snow",
               "peaks", "hills"],
    "weather": ["rain", "rainy", "snowy", "storm", "stormy", "fog", "foggy", "mist", "misty", "cloudy", "sunny",
                "windy", "lightning", "thunder", "weather", "winter", "summer", "autumn", "spring"],
    "buildings": ["building", "house", "home", "tower", "bridge", "church", "temple", "castle", "palace",
                  "skyscraper", "architecture", "room", "kitchen", "interior", "office", "shop", "store",
                  "market", "station", "stadium", "museum", "apartment", "cabin"],
    "lighting": ["light", "lights", "lit", "dark", "darkness", "night", "shadow", "shadows", "bright",
                 "glow", "glowing", "sunlight", "backlit", "silhouette", "candle", "candles", "lantern",
                 "dim", "neon", "illuminated"],
    "clothing": ["shirt", "dress", "jacket", "coat", "suit", "uniform", "jeans", "skirt", "scarf", "tie",
                 "costume", "clothes", "clothing", "wearing", "sweater", "hoodie", "boots", "helmet"],
    "sports": ["sport", "sports", "football", "soccer", "basketball", "tennis", "baseball", "golf", "hockey",
               "running", "swimming", "cycling", "skiing", "surfing", "boxing", "race", "match", "game",
               "playing", "gym", "yoga"],
}


def vocabulary_from(spec_vocabulary: list[str] | dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The vocabulary a spec asks for: None -> the default; a list of labels -> those labels with their default
    keywords (when the default has them) plus the label itself; a dict -> label: its keywords plus itself."""
    if spec_vocabulary is None:
        return DEFAULT_VOCABULARY
    items: Iterable[tuple[str, list[str]]]
    if isinstance(spec_vocabulary, dict):
        items = spec_vocabulary.items()
    else:
        items = ((label, DEFAULT_VOCABULARY.get(label, [])) for label in spec_vocabulary)
    vocab = {label.strip(): [k.lower().strip() for k in [label, *keywords] if k.strip()] for label, keywords in items}
    if not vocab or any(not label for label in vocab):
        raise ValueError(f"judge.vocabulary must name at least one non-empty label, got {spec_vocabulary!r}")
    return vocab


def _pattern(keywords: list[str]) -> re.Pattern:
    alts = "|".join(sorted((re.escape(k) for k in set(keywords)), key=len, reverse=True))
    return re.compile(rf"\b(?:{alts})(?:s|es)?\b")


class OfflineJudge:
    """Labels heads and judges spans from a vocabulary, optionally helped by CLIP text embeddings."""

    def __init__(self, vocabulary: dict[str, list[str]] | None = None,
                 text_encoder: Callable[[list[str]], torch.Tensor] | None = None):
        self.vocabulary = vocabulary or DEFAULT_VOCABULARY
        self.concepts = list(self.vocabulary)
        self.patterns = [_pattern(self.vocabulary[c]) for c in self.concepts]
        self.encoder = text_encoder
        self.prototypes: torch.Tensor | None = None
        self.threshold: float | None = None
        self.separation: float | None = None
        if text_encoder is not None:
            self._calibrate()

    def _calibrate(self) -> None:
        """Prototypes and the cosine threshold that best separates own from other concepts' keywords."""
        assert self.encoder is not None  # calibrated only with an encoder
        keywords = [self.vocabulary[c] for c in self.concepts]
        embs = list(self.encoder([k for ks in keywords for k in ks]).double().split([len(ks) for ks in keywords]))
        sums = [e.sum(0) for e in embs]
        self.prototypes = torch.nn.functional.normalize(torch.stack(sums), dim=1)
        own_parts: list[torch.Tensor] = []
        other_parts: list[torch.Tensor] = []
        for i, e in enumerate(embs):
            if len(e) > 1:  # leave-one-out prototype of concept i against its own keywords
                own_parts.append((e * torch.nn.functional.normalize(sums[i] - e, dim=1)).sum(1))
            other_parts.append(torch.cat([embs[j] for j in range(len(embs)) if j != i] or [e[:0]])
                               @ self.prototypes[i])
        own = torch.cat(own_parts) if own_parts else torch.zeros(0)
        other = torch.cat(other_parts)
        if not len(own) or not len(other):
            return
        candidates = torch.unique(torch.cat([own, other]))  # sorted
        own_at_least = 1 - torch.searchsorted(own.sort().values, candidates) / len(own)
        other_below = torch.searchsorted(other.sort().values, candidates) / len(other)
        balanced = (own_at_least + other_below) / 2
        best = int(torch.argmax(balanced))  # the first (lowest) best threshold
        self.separation = float(balanced[best])
        self.threshold = float(candidates[best]) if self.separation >= MIN_SEPARATION else None

    def _cosines(self, texts: list[str]) -> torch.Tensor:
        """[N, C] cosine of each text with each concept prototype (zeros without an encoder)."""
        if self.prototypes is None or not texts:
            return torch.zeros(len(texts), len(self.concepts), dtype=torch.float64)
        assert self.encoder is not None  # prototypes come from the encoder
        return self.encoder(texts).double() @ self.prototypes.T

    def matches(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, C] bool: text matches concept, [N, C] cosines)."""
        words = torch.tensor([[bool(p.search(t.lower())) for p in self.patterns] for t in texts], dtype=torch.bool)
        cos = self._cosines(texts)
        if self.threshold is not None:
            words = words | (cos >= self.threshold)
        return words.reshape(len(texts), len(self.concepts)), cos

    def label(self, texts: list[str]) -> str:
        """The concept most of ``texts`` match, or ``NO_CONCEPT``."""
        hits, cos = self.matches(texts)
        counts, strength = hits.sum(0).tolist(), cos.sum(0).tolist()
        best = min(range(len(self.concepts)), key=lambda c: (-counts[c], -strength[c], c))
        return self.concepts[best] if counts[best] > 0 else NO_CONCEPT

    def aligned(self, texts: list[str], label: str) -> list[int]:
        """1/0 per text: does it match the concept ``label``."""
        if label not in self.vocabulary:
            return [0] * len(texts)
        hits, _ = self.matches(texts)
        return hits[:, self.concepts.index(label)].int().tolist()

    def verdict(self, head_spans: HeadSpans) -> Verdict:
        """Label from the paper spans, then judge every variant's spans against it."""
        label = self.label(head_spans.texts("paper"))
        aligned: dict[str, list[int | None]] = {v: [*self.aligned(head_spans.texts(v), label)]
                                                for v in head_spans.spans}
        return Verdict(head_spans, label, aligned=aligned, errors={v: [None] * len(a) for v, a in aligned.items()})
