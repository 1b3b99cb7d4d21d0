"""ReLabel: label maps written by a timm classifier run fully convolutionally, stored as a
Hugging Face dataset, read back by image id."""
from .annotate import LabelMapAnnotator, create_annotator, load_weights_file
from .maps import MAP_DTYPES, class_id_dtype, decode_scores, encode_maps
from .store import LabelMapStore, load_label_maps
from .writer import push_maps, read_map_info, write_dataset_card, write_shard
