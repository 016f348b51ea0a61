"""CLIP encoder (tiny random CLIP saved locally) and the Kinetics-concepts baseline (MiniLM).

No CLIP weights ship in any package, so the CLIP path is exercised end to end with a tiny randomly
initialised CLIPModel plus a byte-level BPE tokenizer built here, saved with ``save_pretrained``
and loaded back through ``ClipEncoder.from_pretrained``. MiniLM is the real pip-shipped model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.clip import ClipEncoder, ClipUnavailable, ImagePreprocess, available
from models.concepts import LABELS_PATH, ConceptsEncoder, TextEncoder, load_labels, minilm_dir
from tests.tiny_clip import make_tiny_clip

# The public Kinetics-400 class names in class-index order (as in Debian's opencv-doc
# examples/data/dnn/action_recongnition_kinetics.txt).
KINETICS400 = (
    "abseiling|air drumming|answering questions|applauding|applying cream|archery|"
    "arm wrestling|arranging flowers|assembling computer|auctioning|baby waking up|"
    "baking cookies|balloon blowing|bandaging|barbequing|bartending|beatboxing|bee keeping|"
    "belly dancing|bench pressing|bending back|bending metal|biking through snow|blasting sand|"
    "blowing glass|blowing leaves|blowing nose|blowing out candles|bobsledding|bookbinding|"
    "bouncing on trampoline|bowling|braiding hair|breading or breadcrumbing|breakdancing|"
    "brush painting|brushing hair|brushing teeth|building cabinet|building shed|bungee jumping|"
    "busking|canoeing or kayaking|capoeira|carrying baby|cartwheeling|carving pumpkin|"
    "catching fish|catching or throwing baseball|catching or throwing frisbee|"
    "catching or throwing softball|celebrating|changing oil|changing wheel|checking tires|"
    "cheerleading|chopping wood|clapping|clay pottery making|clean and jerk|cleaning floor|"
    "cleaning gutters|cleaning pool|cleaning shoes|cleaning toilet|cleaning windows|"
    "climbing a rope|climbing ladder|climbing tree|contact juggling|cooking chicken|"
    "cooking egg|cooking on campfire|cooking sausages|counting money|country line dancing|"
    "cracking neck|crawling baby|crossing river|crying|curling hair|cutting nails|"
    "cutting pineapple|cutting watermelon|dancing ballet|dancing charleston|"
    "dancing gangnam style|dancing macarena|deadlifting|decorating the christmas tree|digging|"
    "dining|disc golfing|diving cliff|dodgeball|doing aerobics|doing laundry|doing nails|"
    "drawing|dribbling basketball|drinking|drinking beer|drinking shots|driving car|"
    "driving tractor|drop kicking|drumming fingers|dunking basketball|dying hair|eating burger|"
    "eating cake|eating carrots|eating chips|eating doughnuts|eating hotdog|eating ice cream|"
    "eating spaghetti|eating watermelon|egg hunting|exercising arm|"
    "exercising with an exercise ball|extinguishing fire|faceplanting|feeding birds|"
    "feeding fish|feeding goats|filling eyebrows|finger snapping|fixing hair|flipping pancake|"
    "flying kite|folding clothes|folding napkins|folding paper|front raises|frying vegetables|"
    "garbage collecting|gargling|getting a haircut|getting a tattoo|giving or receiving award|"
    "golf chipping|golf driving|golf putting|grinding meat|grooming dog|grooming horse|"
    "gymnastics tumbling|hammer throw|headbanging|headbutting|high jump|high kick|"
    "hitting baseball|hockey stop|holding snake|hopscotch|hoverboarding|hugging|hula hooping|"
    "hurdling|hurling (sport)|ice climbing|ice fishing|ice skating|ironing|javelin throw|"
    "jetskiing|jogging|juggling balls|juggling fire|juggling soccer ball|jumping into pool|"
    "jumpstyle dancing|kicking field goal|kicking soccer ball|kissing|kitesurfing|knitting|"
    "krumping|laughing|laying bricks|long jump|lunge|making a cake|making a sandwich|"
    "making bed|making jewelry|making pizza|making snowman|making sushi|making tea|marching|"
    "massaging back|massaging feet|massaging legs|massaging person's head|milking cow|"
    "mopping floor|motorcycling|moving furniture|mowing lawn|news anchoring|opening bottle|"
    "opening present|paragliding|parasailing|parkour|passing American football (in game)|"
    "passing American football (not in game)|peeling apples|peeling potatoes|"
    "petting animal (not cat)|petting cat|picking fruit|planting trees|plastering|"
    "playing accordion|playing badminton|playing bagpipes|playing basketball|"
    "playing bass guitar|playing cards|playing cello|playing chess|playing clarinet|"
    "playing controller|playing cricket|playing cymbals|playing didgeridoo|playing drums|"
    "playing flute|playing guitar|playing harmonica|playing harp|playing ice hockey|"
    "playing keyboard|playing kickball|playing monopoly|playing organ|playing paintball|"
    "playing piano|playing poker|playing recorder|playing saxophone|"
    "playing squash or racquetball|playing tennis|playing trombone|playing trumpet|"
    "playing ukulele|playing violin|playing volleyball|playing xylophone|pole vault|"
    "presenting weather forecast|pull ups|pumping fist|pumping gas|punching bag|"
    "punching person (boxing)|push up|pushing car|pushing cart|pushing wheelchair|reading book|"
    "reading newspaper|recording music|riding a bike|riding camel|riding elephant|"
    "riding mechanical bull|riding mountain bike|riding mule|riding or walking with horse|"
    "riding scooter|riding unicycle|ripping paper|robot dancing|rock climbing|"
    "rock scissors paper|roller skating|running on treadmill|sailing|salsa dancing|"
    "sanding floor|scrambling eggs|scuba diving|setting table|shaking hands|shaking head|"
    "sharpening knives|sharpening pencil|shaving head|shaving legs|shearing sheep|"
    "shining shoes|shooting basketball|shooting goal (soccer)|shot put|shoveling snow|"
    "shredding paper|shuffling cards|side kick|sign language interpreting|singing|situp|"
    "skateboarding|ski jumping|skiing (not slalom or crosscountry)|skiing crosscountry|"
    "skiing slalom|skipping rope|skydiving|slacklining|slapping|sled dog racing|smoking|"
    "smoking hookah|snatch weight lifting|sneezing|sniffing|snorkeling|snowboarding|snowkiting|"
    "snowmobiling|somersaulting|spinning poi|spray painting|spraying|springboard diving|squat|"
    "sticking tongue out|stomping grapes|stretching arm|stretching leg|strumming guitar|"
    "surfing crowd|surfing water|sweeping floor|swimming backstroke|swimming breast stroke|"
    "swimming butterfly stroke|swing dancing|swinging legs|swinging on something|"
    "sword fighting|tai chi|taking a shower|tango dancing|tap dancing|tapping guitar|"
    "tapping pen|tasting beer|tasting food|testifying|texting|throwing axe|throwing ball|"
    "throwing discus|tickling|tobogganing|tossing coin|tossing salad|training dog|trapezing|"
    "trimming or shaving beard|trimming trees|triple jump|tying bow tie|"
    "tying knot (not on a tie)|tying tie|unboxing|unloading truck|using computer|"
    "using remote controller (not gaming)|using segway|vault|waiting in line|walking the dog|"
    "washing dishes|washing feet|washing hair|washing hands|water skiing|water sliding|"
    "watering plants|waxing back|waxing chest|waxing eyebrows|waxing legs|weaving basket|"
    "welding|whistling|windsurfing|wrapping present|wrestling|writing|yawning|yoga|zumba"
).split("|")


# ---------------------------------------------------------------- CLIP (tiny, random init)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP (hidden 32, 2 layers, 32 px, patch 8) + tokenizer + image config on disk."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def clip(tiny_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(str(tiny_clip_dir), device="cpu")


def _clips(b: int = 3, t: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, 40, 56, 3), dtype=np.uint8)


def test_clip_shapes_norms_and_determinism(clip: ClipEncoder, tiny_clip_dir: Path) -> None:
    ok, why = available(str(tiny_clip_dir))
    assert ok, why
    # Preprocessing comes from the saved preprocessor_config.json; the crop from the model.
    assert clip.preprocess == ImagePreprocess(resize=36, crop=32, mean=(0.5, 0.4, 0.3),
                                              std=(0.2, 0.25, 0.3))
    emb = clip.encode_clips(_clips())
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    txt = clip.encode_text(["a cat", "a dog runs past the cat", "x"])
    assert txt.shape == (3, 16) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    # A second load reads the same saved weights (not a fresh random init).
    again = ClipEncoder.from_pretrained(str(tiny_clip_dir), device="cpu")
    np.testing.assert_array_equal(again.encode_clips(_clips()), emb)
    np.testing.assert_array_equal(again.encode_text(["a cat", "a dog runs past the cat", "x"]),
                                  txt)
    assert again.version == clip.version and clip.version.startswith("clip:tiny-clip")
    assert not np.allclose(emb[0], emb[1])  # different clips, different vectors


def test_clip_embedding_is_normalised_mean_of_frames(clip: ClipEncoder) -> None:
    clips = _clips(b=2, t=5)
    frames = clip.encode_frames(clips.reshape(10, *clips.shape[2:])).reshape(2, 5, -1)
    np.testing.assert_allclose(np.linalg.norm(frames, axis=-1), 1.0, atol=1e-5)
    mean = frames.mean(axis=1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(clip.encode_clips(clips), expected, atol=1e-6)


def test_clip_batch_invariance(clip: ClipEncoder, tiny_clip_dir: Path) -> None:
    clips = _clips(b=4, t=3, seed=1)
    small = ClipEncoder.from_pretrained(str(tiny_clip_dir), device="cpu", batch_size=2)
    full = clip.encode_clips(clips)
    np.testing.assert_allclose(small.encode_clips(clips), full, atol=1e-5)
    np.testing.assert_allclose(clip.encode_clips(clips[2:3]), full[2:3], atol=1e-5)
    texts = ["a cat", "a dog and a cat and a dog", "dog"]  # different lengths: padding varies
    np.testing.assert_allclose(small.encode_text(texts), clip.encode_text(texts), atol=1e-5)
    np.testing.assert_allclose(clip.encode_text(texts[2:]), clip.encode_text(texts)[2:],
                               atol=1e-5)


def test_clip_preprocessing_defaults_without_processor_config(tiny_clip_dir: Path,
                                                              tmp_path: Path) -> None:
    bare = tmp_path / "bare-clip"
    shutil.copytree(tiny_clip_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    loaded = ClipEncoder.from_pretrained(str(bare), device="cpu")
    assert loaded.preprocess == ImagePreprocess(resize=32, crop=32)  # OpenAI CLIP mean/std


def test_clip_preprocessing_matches_transformers_processor() -> None:
    """Torch resize/crop/normalise stays within rounding of CLIPImageProcessor (PIL)."""
    import skimage.data
    from transformers import CLIPImageProcessorPil

    image = skimage.data.chelsea()  # (300, 451, 3): exercises resize and center crop
    ref = CLIPImageProcessorPil()(images=[image], return_tensors="pt")["pixel_values"]
    ours = ImagePreprocess(resize=224, crop=224)(torch.from_numpy(image)[None])
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    assert (ours - ref).abs().mean() < 0.01  # PIL rounds to uint8 after resizing


def test_clip_unavailable_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip"
    ok, why = available(str(missing))
    assert not ok and "does not exist" in why and "save_pretrained" in why
    with pytest.raises(ClipUnavailable, match="save_pretrained"):
        ClipEncoder.from_pretrained(str(missing))
    ok, why = available(None)
    assert not ok and "save_pretrained" in why


def test_clip_unavailable_not_a_clip_folder() -> None:
    ok, why = available(str(minilm_dir()))  # a BERT folder
    assert not ok and "'bert'" in why and "not CLIP" in why


def test_clip_unavailable_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once at import
    bogus = "videobert-tests/no-such-clip-model"
    ok, why = available(bogus)
    assert not ok and bogus in why and "offline" in why and "save_pretrained" in why
    with pytest.raises(ClipUnavailable, match="save_pretrained"):
        ClipEncoder.from_pretrained(bogus)


# ---------------------------------------------------------------- MiniLM + Kinetics concepts


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "kinetics400_labels.txt"
    path.write_text("\n".join(KINETICS400) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def concepts(text_encoder: TextEncoder, labels_file: Path) -> ConceptsEncoder:
    return ConceptsEncoder.from_labels_file(labels_file, text_encoder=text_encoder)


def test_text_encoder_documented_similarities(text_encoder: TextEncoder) -> None:
    emb = text_encoder.encode(["A cat sits on the sofa.", "A kitten is lying on the couch.",
                               "A rocket is launching into space."])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.6
    assert emb[0] @ emb[2] < 0.25
    assert text_encoder.version == TextEncoder(device="cpu").version


def test_text_encoder_matches_sentence_transformers(text_encoder: TextEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    texts = ["a man cycling down the street", "two people dancing", "word " * 300]  # truncated
    ref = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        texts, normalize_embeddings=True)
    np.testing.assert_allclose(text_encoder.encode(texts), ref, atol=1e-5)


def _peaked(labels: list[str], label: str, n: int = 1, peak: float = 10.0, noise: float = 1.0,
            seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0.0, noise, (n, len(labels)))
    logits[:, labels.index(label)] += peak
    return logits


def test_concepts_bike_logits_retrieve_cycling(concepts: ConceptsEncoder) -> None:
    assert concepts.labels == KINETICS400 and concepts.label_embeddings.shape == (400, 384)
    video = concepts.embed_logits(_peaked(concepts.labels, "riding a bike"))
    assert video.shape == (1, 384) and video.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(video, axis=1), 1.0, atol=1e-5)
    queries = ["a man cycling down the street", "a chef cooking pasta", "two people dancing"]
    scores = concepts.embed_text(queries) @ video[0]
    assert int(np.argmax(scores)) == 0, scores


def test_concepts_temperature_peaked_vs_flat(text_encoder: TextEncoder,
                                             concepts: ConceptsEncoder) -> None:
    labels = concepts.labels
    logits = _peaked(labels, "riding a bike", peak=3.0, noise=0.5)
    e_bike = concepts.label_embeddings[labels.index("riding a bike")]
    mean = concepts.label_embeddings.mean(axis=0)
    mean /= np.linalg.norm(mean)
    cold = concepts.with_temperature(0.05).embed_logits(logits)[0]
    hot = concepts.with_temperature(1000.0).embed_logits(logits)[0]
    assert cold @ e_bike > 0.999  # all mass on the top class
    assert hot @ mean > 0.999  # uniform mix of all 400 phrases
    p = concepts.probabilities(logits)[0]  # T=1: in between
    assert int(np.argmax(p)) == labels.index("riding a bike") and 0.01 < p.max() < 0.5
    p_cold = ConceptsEncoder(text_encoder, labels[:3], temperature=0.5).probabilities(
        np.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p_cold[0], np.exp([2.0, 0, 0]) / (np.exp(2.0) + 2))  # T halves
    with pytest.raises(ValueError, match="temperature"):
        ConceptsEncoder(text_encoder, labels, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        concepts.with_temperature(-1.0)
    with pytest.raises(ValueError, match=r"\(N, 400\)"):
        concepts.embed_logits(np.zeros((2, 399)))
    assert concepts.temperature == 1.0  # with_temperature returns a copy
    cold_version = concepts.with_temperature(0.05).version
    assert "T=0.05" in cold_version and cold_version != concepts.version


def test_concepts_batch_invariance(concepts: ConceptsEncoder, text_encoder: TextEncoder) -> None:
    logits = np.random.default_rng(3).normal(0.0, 2.0, (5, 400))
    full = concepts.embed_logits(logits)
    rows = np.concatenate([concepts.embed_logits(logits[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(full, rows, atol=1e-6)
    texts = ["a man cycling down the street", "dancing", "a chef cooking pasta in a kitchen"]
    small = TextEncoder(device="cpu", batch_size=1)
    np.testing.assert_allclose(small.encode(texts), text_encoder.encode(texts), atol=1e-5)


def test_labels_file_loads_and_matches_public_list(labels_file: Path) -> None:
    assert load_labels(labels_file) == KINETICS400
    if not LABELS_PATH.is_file():
        pytest.skip(f"{LABELS_PATH} not shipped yet")
    assert load_labels(LABELS_PATH) == KINETICS400


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_matches_cpu(clip: ClipEncoder, tiny_clip_dir: Path,
                              text_encoder: TextEncoder) -> None:
    """CUDA path (bf16 autocast) agrees with the float32 CPU path."""
    gpu = ClipEncoder.from_pretrained(str(tiny_clip_dir))  # device picked: CUDA
    assert gpu.device.type == "cuda"
    cos = np.sum(gpu.encode_clips(_clips()) * clip.encode_clips(_clips()), axis=1)
    assert cos.min() > 0.99, cos
    texts = ["a cat", "a dog runs past the cat"]
    assert np.sum(gpu.encode_text(texts) * clip.encode_text(texts), axis=1).min() > 0.99
    queries = ["a man cycling down the street", "two people dancing"]
    gpu_text = TextEncoder()
    assert gpu_text.device.type == "cuda"
    assert np.sum(gpu_text.encode(queries) * text_encoder.encode(queries), axis=1).min() > 0.99
