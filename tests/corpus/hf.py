"""HuggingFace transformers families in tiny configs (hidden 32-64, two layers, small vocabularies, sequences of
12 tokens) with random weights, as a user builds them: ``XConfig(...)`` then ``XModel(config).eval()``, with the
attention implementation transformers picks by default. Decoders run with ``use_cache=False`` (the KV cache is
issue 18). Text inputs carry an attention mask with padding at the end of one row, so the mask code runs; sliding
windows are set shorter than the sequence, so they matter.

Not here: Longformer and LED, whose encoder asks ``is_index_global_attn.flatten().any().item()`` and branches in
python on the answer (global attention or not), so no single graph is the model (torch.export stops there too)."""
from __future__ import annotations

import dataclasses
import importlib.util

import torch

from . import Model

BATCH, SEQ = 2, 12
VOCAB = 99


def _entry(name: str, family: str, model_cls: str, config_cls: str, config: dict, inputs, **kw) -> Model:
    def build():
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_cls)(**config)
        return getattr(transformers, model_cls)(cfg).eval()

    return Model("transformers", name, family, build, inputs, **kw)


def _ids(g: torch.Generator, vocab: int = VOCAB, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(3, vocab, (BATCH, seq), generator=g)  # ids 0-2 stay free for pad/bos/eos tokens


def _mask(g: torch.Generator, seq: int = SEQ, unit: int = 1) -> torch.Tensor:
    """Ones, with the second row's last 2-5 positions (times ``unit``) padding: the trace's example and the fresh
    input differ in how much, so a mask the trace baked in shows."""
    pad = int(torch.randint(2, 6, (), generator=g)) * unit
    mask = torch.ones(BATCH, seq, dtype=torch.long)
    mask[1, seq - pad:] = 0
    return mask


def _text(vocab: int = VOCAB, types: bool = False, seq: int = SEQ):
    """input_ids and an attention mask with padding in the second row (and token_type_ids when asked)."""
    def inputs(g: torch.Generator):
        kwargs = {"input_ids": _ids(g, vocab, seq), "attention_mask": _mask(g, seq)}
        if types:
            kwargs["token_type_ids"] = torch.randint(0, 2, (BATCH, seq), generator=g)
        return (), kwargs
    return inputs


def _ids_only(types: bool = False):
    """input_ids (and token_type_ids when asked) for models that take no attention mask."""
    def inputs(g: torch.Generator):
        kwargs = {"input_ids": _ids(g)}
        if types:
            kwargs["token_type_ids"] = torch.randint(0, 2, (BATCH, SEQ), generator=g)
        return (), kwargs
    return inputs


def _seq2seq(vocab: int = VOCAB, target: int = 7):
    """Encoder ids with a padded row, and decoder ids (teacher forcing) of another length."""
    def inputs(g: torch.Generator):
        return (), {"input_ids": _ids(g, vocab), "attention_mask": _mask(g),
                    "decoder_input_ids": _ids(g, vocab, target)}
    return inputs


def _pixels(size: int = 32, channels: int = 3):
    def inputs(g: torch.Generator):
        return (), {"pixel_values": torch.randn(BATCH, channels, size, size, generator=g)}
    return inputs


# the common tiny sizes: 2 layers, 4 heads of 16, a small MLP
_LM = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
           max_position_embeddings=64, use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_GQA = dict(_LM, num_key_value_heads=2)  # grouped-query attention: two query heads share each key/value head
_ENC = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64, pad_token_id=0)
_VIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128)


def _decoders() -> list[Model]:
    return [
        _entry("gpt2", "GPT-2", "GPT2LMHeadModel", "GPT2Config",
               dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                    bos_token_id=1, eos_token_id=2), _text()),
        _entry("llama", "Llama", "LlamaForCausalLM", "LlamaConfig", _GQA, _text()),
        _entry("mistral", "Mistral", "MistralForCausalLM", "MistralConfig", dict(_GQA, sliding_window=4), _text()),
        # experts_implementation="batched_mm": the default "grouped_mm" counts each expert's tokens (torch.histc) and
        # multiplies through the custom op transformers::grouped_mm_fallback, a python loop over those counts
        _entry("mixtral", "Mixtral", "MixtralForCausalLM", "MixtralConfig",
               dict(_GQA, sliding_window=4, num_local_experts=4, num_experts_per_tok=2,
                    experts_implementation="batched_mm"), _text()),
        _entry("qwen2", "Qwen2", "Qwen2ForCausalLM", "Qwen2Config", _GQA, _text()),
        _entry("qwen3", "Qwen3", "Qwen3ForCausalLM", "Qwen3Config", dict(_GQA, head_dim=16), _text()),
        _entry("phi3", "Phi-3", "Phi3ForCausalLM", "Phi3Config", _GQA, _text()),
        _entry("phi", "Phi", "PhiForCausalLM", "PhiConfig", dict(_LM, partial_rotary_factor=0.5), _text()),
        _entry("gemma", "Gemma", "GemmaForCausalLM", "GemmaConfig", dict(_GQA, head_dim=16), _text()),
        _entry("gemma2", "Gemma2", "Gemma2ForCausalLM", "Gemma2Config",
               dict(_GQA, head_dim=16, sliding_window=4), _text()),
        _entry("opt", "OPT", "OPTForCausalLM", "OPTConfig",
               dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                    word_embed_proj_dim=64, max_position_embeddings=64, use_cache=False, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2), _text()),
        _entry("gpt_neox", "GPT-NeoX", "GPTNeoXForCausalLM", "GPTNeoXConfig", dict(_LM, rotary_pct=0.5), _text()),
        _entry("gptj", "GPT-J", "GPTJForCausalLM", "GPTJConfig",
               dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, rotary_dim=8,
                    use_cache=False, bos_token_id=1, eos_token_id=2), _text()),
        _entry("falcon", "Falcon", "FalconForCausalLM", "FalconConfig",
               dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    new_decoder_architecture=True, num_kv_heads=2, use_cache=False, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2), _text()),
        _entry("bloom", "BLOOM", "BloomForCausalLM", "BloomConfig",
               dict(vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4, use_cache=False, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2), _text()),
        _entry("gemma3", "Gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig",
               dict(_GQA, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                    layer_types=["sliding_attention", "full_attention"]), _text()),
        _entry("gpt_bigcode", "GPT-BigCode", "GPTBigCodeForCausalLM", "GPTBigCodeConfig",
               dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, multi_query=True,
                    use_cache=False, bos_token_id=1, eos_token_id=2), _text()),
        _entry("starcoder2", "Starcoder2", "Starcoder2ForCausalLM", "Starcoder2Config",
               dict(_GQA, sliding_window=4), _text()),
        _entry("olmo2", "OLMo2", "Olmo2ForCausalLM", "Olmo2Config", _GQA, _text()),
        _entry("cohere", "Cohere", "CohereForCausalLM", "CohereConfig", _GQA, _text()),
        _entry("mamba", "Mamba", "MambaForCausalLM", "MambaConfig",
               dict(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
                    use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2), _ids_only()),
    ]


def _encoders() -> list[Model]:
    return [
        _entry("bert", "BERT", "BertModel", "BertConfig", _ENC, _text(types=True)),
        _entry("roberta", "RoBERTa", "RobertaModel", "RobertaConfig", _ENC, _text()),
        _entry("distilbert", "DistilBERT", "DistilBertModel", "DistilBertConfig",
               dict(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64,
                    pad_token_id=0), _text()),
        _entry("albert", "ALBERT", "AlbertModel", "AlbertConfig", dict(_ENC, embedding_size=32), _text(types=True)),
        _entry("deberta_v2", "DeBERTa-v2", "DebertaV2Model", "DebertaV2Config",
               dict(_ENC, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"]),
               _text(types=True)),
        _entry("mobilebert", "MobileBERT", "MobileBertModel", "MobileBertConfig",
               dict(_ENC, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, num_feedforward_networks=2),
               _text(types=True)),
        _entry("mpnet", "MPNet", "MPNetModel", "MPNetConfig", _ENC, _text()),
        _entry("fnet", "FNet", "FNetModel", "FNetConfig", dict(_ENC, use_tpu_fourier_optimizations=False),
               _ids_only(types=True)),
        _entry("modernbert", "ModernBERT", "ModernBertModel", "ModernBertConfig",
               dict(_ENC, global_attn_every_n_layers=2, local_attention=4, bos_token_id=1, eos_token_id=2,
                    cls_token_id=1, sep_token_id=2), _text()),
        # block-sparse attention needs over (5 + 2 * random blocks) * block size tokens, or it runs full attention
        _entry("bigbird", "BigBird", "BigBirdModel", "BigBirdConfig",
               dict(_ENC, attention_type="block_sparse", block_size=2, num_random_blocks=1), _text(seq=16)),
        _entry("electra", "ELECTRA", "ElectraModel", "ElectraConfig", dict(_ENC, embedding_size=32),
               _text(types=True)),
    ]


def _seq2seqs() -> list[Model]:
    return [
        _entry("t5", "T5", "T5ForConditionalGeneration", "T5Config",
               dict(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, use_cache=False, pad_token_id=0, eos_token_id=2,
                    decoder_start_token_id=0), _seq2seq()),
        _entry("bart", "BART", "BartForConditionalGeneration", "BartConfig", _bart_like(), _seq2seq()),
        _entry("pegasus", "Pegasus", "PegasusForConditionalGeneration", "PegasusConfig", _bart_like(), _seq2seq()),
        _entry("marian", "Marian", "MarianMTModel", "MarianConfig", _bart_like(decoder_start_token_id=0), _seq2seq()),
        _entry("mbart", "mBART", "MBartForConditionalGeneration", "MBartConfig", _bart_like(), _seq2seq()),
        _entry("m2m100", "M2M100", "M2M100ForConditionalGeneration", "M2M100Config", _bart_like(), _seq2seq()),
    ]


def _bart_like(**extra) -> dict:
    """BART's configuration keys, shared by the models that copy its layout."""
    return dict(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
                use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)


def _vision() -> list[Model]:
    return [
        _entry("vit", "ViT", "ViTModel", "ViTConfig", _VIT, _pixels()),
        _entry("deit", "DeiT", "DeiTForImageClassificationWithTeacher", "DeiTConfig", _VIT, _pixels()),
        _entry("swin", "Swin", "SwinModel", "SwinConfig",
               dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4),
               _pixels()),
        _entry("convnext", "ConvNeXt", "ConvNextModel", "ConvNextConfig",
               dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2), _pixels()),
        _entry("beit", "BEiT", "BeitModel", "BeitConfig",
               dict(_VIT, use_relative_position_bias=True, use_mean_pooling=True), _pixels()),
        _entry("dinov2", "DINOv2", "Dinov2Model", "Dinov2Config", dict(_VIT, mlp_ratio=2), _pixels()),
        _entry("swinv2", "Swin V2", "Swinv2Model", "Swinv2Config",
               dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4),
               _pixels()),
        _entry("segformer", "SegFormer", "SegformerForSemanticSegmentation", "SegformerConfig",
               dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
                    strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
                    num_labels=5), _pixels()),
        _entry("resnet", "ResNet", "ResNetModel", "ResNetConfig",
               dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck"), _pixels()),
        _entry("siglip", "SigLIP", "SiglipModel", "SiglipConfig",
               dict(text_config=dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=SEQ, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2),
                    vision_config=dict(_VIT)), _clip),
        _entry("yolos", "YOLOS", "YolosForObjectDetection", "YolosConfig",
               dict(_VIT, image_size=[32, 32], num_detection_tokens=5, num_labels=3), _pixels()),
        _entry("detr", "DETR", "DetrForObjectDetection", "DetrConfig",
               dict(backbone_config=dict(model_type="resnet", embedding_size=16, hidden_sizes=[16, 32, 32, 64],
                                         depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage4"]),
                    num_queries=5, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_labels=3),
               _pixels(64)),
        _entry("clip", "CLIP", "CLIPModel", "CLIPConfig",
               dict(text_config=dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2),
                    vision_config=dict(_VIT), projection_dim=32), _clip),
    ]


def _clip(g: torch.Generator):
    _, kwargs = _text()(g)
    return (), dict(kwargs, pixel_values=torch.randn(BATCH, 3, 32, 32, generator=g))


def _wav(g: torch.Generator):
    return (), {"input_values": torch.randn(BATCH, 800, generator=g)}


def _wav_masked(g: torch.Generator):
    """Raw audio with the second row's last samples padding (a mask of samples, as the feature extractor gives)."""
    return (), {"input_values": torch.randn(BATCH, 800, generator=g), "attention_mask": _mask(g, 800, unit=60)}


def _whisper(g: torch.Generator):
    return (), {"input_features": torch.randn(BATCH, 16, 32, generator=g), "decoder_input_ids": _ids(g, seq=7)}


def _fbank(g: torch.Generator):
    """Filter-bank frames (batch, frames, features) with the second row's last frames padding, and decoder ids."""
    frames = 24
    return (), {"input_features": torch.randn(BATCH, frames, 16, generator=g), "attention_mask": _mask(g, frames),
                "decoder_input_ids": _ids(g, seq=7)}


# raw-audio encoders: a two-layer feature extractor (strides 5 and 4), then two transformer layers
_WAV = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32),
            conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def _speech() -> list[Model]:
    return [
        _entry("wav2vec2", "Wav2Vec2", "Wav2Vec2Model", "Wav2Vec2Config", _WAV, _wav),
        _entry("whisper", "Whisper", "WhisperModel", "WhisperConfig",
               dict(vocab_size=VOCAB, num_mel_bins=16, d_model=64, encoder_layers=2, decoder_layers=2,
                    encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                    max_source_positions=16, max_target_positions=32, use_cache=False, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, decoder_start_token_id=1), _whisper),
        _entry("hubert", "HuBERT", "HubertModel", "HubertConfig", _WAV, _wav),
        _entry("wavlm", "WavLM", "WavLMModel", "WavLMConfig",  # the large variant's layout: it takes a padding mask
               dict(_WAV, num_buckets=16, max_bucket_distance=32, feat_extract_norm="layer", do_stable_layer_norm=True),
               _wav_masked),
        _entry("speech_to_text", "Speech2Text", "Speech2TextModel", "Speech2TextConfig",
               dict(vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=64,
                    max_target_positions=32, num_conv_layers=2, conv_channels=32, input_feat_per_channel=16,
                    use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
               _fbank),
    ]


# the default test run takes one or two of each kind (GQA, RoPE, sliding windows, encoders, encoder-decoders,
# vision, speech); the others run with the slow tests (CI runs both)
_DEFAULT = {"gpt2", "llama", "mistral", "qwen2", "phi3", "gemma", "bert", "roberta", "distilbert", "fnet", "t5",
            "bart", "vit", "swin", "clip", "wav2vec2", "whisper"}


def _models() -> list[Model]:
    if importlib.util.find_spec("transformers") is None:
        return []
    return [m if m.name in _DEFAULT else dataclasses.replace(m, slow=True)
            for m in _decoders() + _encoders() + _seq2seqs() + _vision() + _speech()]


MODELS = _models()
