"""Class names and prompt templates of the zero-shot presets (data only).

Class names are in each dataset's label order (CIFAR/Food-101: torchvision's; Oxford-Pets, Country-211,
ImageNet: CLIP's cleaned names). ImageNet-A and ImageNet-R keep the 200 ImageNet-1k classes they cover,
in ImageNet order. Names and templates follow CLIP (Radford et al., 2021) as collected by CLIP_benchmark
(MIT licence, ``en_classnames.json``, ``en_zeroshot_classification_templates.json``); Food-101 and CIFAR
names are the datasets' own. Templates use ``{}`` for the class name.
"""


# CIFAR-10, 10 classes.
CIFAR10 = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

# CIFAR-100, 100 classes (fine labels).
CIFAR100 = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom", "oak tree", "orange",
    "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow tree", "wolf", "woman", "worm",
]

# Food-101, 101 classes.
FOOD101 = [
    "apple pie", "baby back ribs", "baklava", "beef carpaccio", "beef tartare", "beet salad", "beignets", "bibimbap",
    "bread pudding", "breakfast burrito", "bruschetta", "caesar salad", "cannoli", "caprese salad", "carrot cake",
    "ceviche", "cheese plate", "cheesecake", "chicken curry", "chicken quesadilla", "chicken wings", "chocolate cake",
    "chocolate mousse", "churros", "clam chowder", "club sandwich", "crab cakes", "creme brulee", "croque madame",
    "cup cakes", "deviled eggs", "donuts", "dumplings", "edamame", "eggs benedict", "escargots", "falafel",
    "filet mignon", "fish and chips", "foie gras", "french fries", "french onion soup", "french toast",
    "fried calamari", "fried rice", "frozen yogurt", "garlic bread", "gnocchi", "greek salad",
    "grilled cheese sandwich", "grilled salmon", "guacamole", "gyoza", "hamburger", "hot and sour soup", "hot dog",
    "huevos rancheros", "hummus", "ice cream", "lasagna", "lobster bisque", "lobster roll sandwich",
    "macaroni and cheese", "macarons", "miso soup", "mussels", "nachos", "omelette", "onion rings", "oysters",
    "pad thai", "paella", "pancakes", "panna cotta", "peking duck", "pho", "pizza", "pork chop", "poutine",
    "prime rib", "pulled pork sandwich", "ramen", "ravioli", "red velvet cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed salad", "shrimp and grits", "spaghetti bolognese", "spaghetti carbonara", "spring rolls",
    "steak", "strawberry shortcake", "sushi", "tacos", "takoyaki", "tiramisu", "tuna tartare", "waffles",
]

# Country-211, 211 classes (ISO code order).
COUNTRY211 = [
    "Andorra", "United Arab Emirates", "Afghanistan", "Antigua and Barbuda", "Anguilla", "Albania", "Armenia",
    "Angola", "Antarctica", "Argentina", "Austria", "Australia", "Aruba", "Aland Islands", "Azerbaijan",
    "Bosnia and Herzegovina", "Barbados", "Bangladesh", "Belgium", "Burkina Faso", "Bulgaria", "Bahrain", "Benin",
    "Bermuda", "Brunei Darussalam", "Bolivia", "Bonaire, Saint Eustatius and Saba", "Brazil", "Bahamas", "Bhutan",
    "Botswana", "Belarus", "Belize", "Canada", "DR Congo", "Central African Republic", "Switzerland", "Cote d'Ivoire",
    "Cook Islands", "Chile", "Cameroon", "China", "Colombia", "Costa Rica", "Cuba", "Cabo Verde", "Curacao", "Cyprus",
    "Czech Republic", "Germany", "Denmark", "Dominica", "Dominican Republic", "Algeria", "Ecuador", "Estonia",
    "Egypt", "Spain", "Ethiopia", "Finland", "Fiji", "Falkland Islands", "Faeroe Islands", "France", "Gabon",
    "United Kingdom", "Grenada", "Georgia", "French Guiana", "Guernsey", "Ghana", "Gibraltar", "Greenland", "Gambia",
    "Guadeloupe", "Greece", "South Georgia and South Sandwich Is.", "Guatemala", "Guam", "Guyana", "Hong Kong",
    "Honduras", "Croatia", "Haiti", "Hungary", "Indonesia", "Ireland", "Israel", "Isle of Man", "India", "Iraq",
    "Iran", "Iceland", "Italy", "Jersey", "Jamaica", "Jordan", "Japan", "Kenya", "Kyrgyz Republic", "Cambodia",
    "St. Kitts and Nevis", "North Korea", "South Korea", "Kuwait", "Cayman Islands", "Kazakhstan", "Laos", "Lebanon",
    "St. Lucia", "Liechtenstein", "Sri Lanka", "Liberia", "Lithuania", "Luxembourg", "Latvia", "Libya", "Morocco",
    "Monaco", "Moldova", "Montenegro", "Saint-Martin", "Madagascar", "Macedonia", "Mali", "Myanmar", "Mongolia",
    "Macau", "Martinique", "Mauritania", "Malta", "Mauritius", "Maldives", "Malawi", "Mexico", "Malaysia",
    "Mozambique", "Namibia", "New Caledonia", "Nigeria", "Nicaragua", "Netherlands", "Norway", "Nepal", "New Zealand",
    "Oman", "Panama", "Peru", "French Polynesia", "Papua New Guinea", "Philippines", "Pakistan", "Poland",
    "Puerto Rico", "Palestine", "Portugal", "Palau", "Paraguay", "Qatar", "Reunion", "Romania", "Serbia", "Russia",
    "Rwanda", "Saudi Arabia", "Solomon Islands", "Seychelles", "Sudan", "Sweden", "Singapore", "St. Helena",
    "Slovenia", "Svalbard and Jan Mayen Islands", "Slovakia", "Sierra Leone", "San Marino", "Senegal", "Somalia",
    "South Sudan", "El Salvador", "Sint Maarten", "Syria", "Eswatini", "Togo", "Thailand", "Tajikistan",
    "Timor-Leste", "Turkmenistan", "Tunisia", "Tonga", "Turkey", "Trinidad and Tobago", "Taiwan", "Tanzania",
    "Ukraine", "Uganda", "United States", "Uruguay", "Uzbekistan", "Vatican", "Venezuela", "British Virgin Islands",
    "United States Virgin Islands", "Vietnam", "Vanuatu", "Samoa", "Kosovo", "Yemen", "South Africa", "Zambia",
    "Zimbabwe",
]

# Oxford-IIIT Pets, 37 breeds.
OXFORD_PETS = [
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel", "English Setter",
    "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon",
    "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard",
    "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx", "Staffordshire Bull Terrier", "Wheaten Terrier",
    "Yorkshire Terrier",
]

# ImageNet-A, its 200 ImageNet-1k classes.
IMAGENET_A = [
    "stingray", "goldfinch", "junco", "American robin", "jay", "bald eagle", "vulture", "newt", "American bullfrog",
    "box turtle", "green iguana", "agama", "chameleon", "American alligator", "garter snake", "harvestman",
    "scorpion", "tarantula", "centipede", "sulphur-crested cockatoo", "lorikeet", "hummingbird", "toucan", "duck",
    "goose", "koala", "jellyfish", "sea anemone", "flatworm", "snail", "crayfish", "hermit crab", "flamingo",
    "great egret", "oystercatcher", "pelican", "sea lion", "Chihuahua", "Golden Retriever", "Rottweiler",
    "German Shepherd Dog", "pug", "red fox", "Persian cat", "lynx", "lion", "American black bear", "mongoose",
    "ladybug", "rhinoceros beetle", "weevil", "fly", "bee", "ant", "grasshopper", "stick insect", "cockroach",
    "praying mantis", "leafhopper", "dragonfly", "monarch butterfly", "small white butterfly",
    "gossamer-winged butterfly", "starfish", "cottontail rabbit", "porcupine", "fox squirrel", "marmot", "bison",
    "skunk", "armadillo", "baboon", "white-headed capuchin", "African bush elephant", "pufferfish", "academic gown",
    "accordion", "acoustic guitar", "airliner", "ambulance", "apron", "balance beam", "balloon", "banjo", "barn",
    "wheelbarrow", "basketball", "lighthouse", "beaker", "bikini", "hunting bow", "bow tie", "breastplate", "broom",
    "candle", "canoe", "castle", "cello", "chain", "storage chest", "Christmas stocking", "cowboy boot", "cradle",
    "rotary dial telephone", "digital clock", "doormat", "drumstick", "dumbbell", "envelope", "feather boa",
    "flagpole", "forklift", "fountain", "garbage truck", "goblet", "go-kart", "golf cart", "grand piano",
    "hair dryer", "clothes iron", "carved pumpkin", "jeep", "kimono", "lighter", "limousine", "manhole cover",
    "maraca", "marimba", "mask", "mitten", "mosque", "metal nail", "obelisk", "ocarina", "pipe organ", "parachute",
    "parking meter", "piggy bank", "pool table", "hockey puck", "quill", "racket", "fishing casting reel", "revolver",
    "rocking chair", "rugby ball", "salt shaker", "sandal", "saxophone", "school bus", "schooner", "sewing machine",
    "shovel", "sleeping bag", "snowmobile", "snowplow", "soap dispenser", "spatula", "spider web", "steam locomotive",
    "stethoscope", "couch", "submarine", "sundial", "suspension bridge", "syringe", "tank", "teddy bear", "toaster",
    "torch", "tricycle", "umbrella", "unicycle", "viaduct", "volleyball", "washing machine", "water tower",
    "wine bottle", "shipwreck", "guacamole", "pretzel", "cheeseburger", "hot dog", "broccoli", "cucumber",
    "bell pepper", "mushroom", "lemon", "banana", "cherimoya (custard apple)", "pomegranate", "carbonara", "bubble",
    "cliff", "volcano", "baseball player", "rapeseed", "yellow lady's slipper", "corn", "acorn",
]

# ImageNet-R, its 200 ImageNet-1k classes.
IMAGENET_R = [
    "goldfish", "great white shark", "hammerhead shark", "stingray", "hen", "ostrich", "goldfinch", "junco",
    "bald eagle", "vulture", "smooth newt", "axolotl", "tree frog", "green iguana", "chameleon", "Indian cobra",
    "scorpion", "tarantula", "centipede", "peafowl", "lorikeet", "hummingbird", "toucan", "duck", "goose",
    "black swan", "koala", "jellyfish", "snail", "American lobster", "hermit crab", "flamingo", "great egret",
    "pelican", "king penguin", "grey whale", "killer whale", "sea lion", "Chihuahua", "Shih Tzu", "Afghan Hound",
    "Basset Hound", "Beagle", "Bloodhound", "Italian Greyhound", "Whippet", "Weimaraner", "Yorkshire Terrier",
    "Boston Terrier", "Scottish Terrier", "West Highland White Terrier", "Golden Retriever", "Labrador Retriever",
    "Cocker Spaniel", "collie", "Border Collie", "Rottweiler", "German Shepherd Dog", "Boxer", "French Bulldog",
    "St. Bernard", "Siberian Husky", "Dalmatian", "pug", "Pomeranian", "Chow Chow", "Pembroke Welsh Corgi",
    "Toy Poodle", "Standard Poodle", "grey wolf", "hyena", "red fox", "tabby cat", "leopard", "snow leopard", "lion",
    "tiger", "cheetah", "polar bear", "meerkat", "ladybug", "fly", "bee", "ant", "grasshopper", "cockroach",
    "praying mantis", "dragonfly", "monarch butterfly", "starfish", "cottontail rabbit", "porcupine", "fox squirrel",
    "beaver", "guinea pig", "zebra", "pig", "hippopotamus", "bison", "gazelle", "llama", "skunk", "badger",
    "orangutan", "gorilla", "chimpanzee", "gibbon", "baboon", "giant panda", "eel", "clownfish", "pufferfish",
    "accordion", "ambulance", "assault rifle", "backpack", "barn", "wheelbarrow", "basketball", "bathtub",
    "lighthouse", "beer glass", "binoculars", "birdhouse", "bow tie", "broom", "bucket", "cauldron", "candle",
    "cannon", "canoe", "carousel", "castle", "mobile phone", "cowboy hat", "electric guitar", "fire truck", "flute",
    "gas mask or respirator", "grand piano", "guillotine", "hammer", "harmonica", "harp", "hatchet", "jeep",
    "joystick", "lab coat", "lawn mower", "lipstick", "mailbox", "missile", "mitten", "parachute", "pickup truck",
    "pirate ship", "revolver", "rugby ball", "sandal", "saxophone", "school bus", "schooner", "shield", "soccer ball",
    "space shuttle", "spider web", "steam locomotive", "scarf", "submarine", "tank", "tennis ball", "tractor",
    "trombone", "vase", "violin", "military aircraft", "wine bottle", "ice cream", "bagel", "pretzel", "cheeseburger",
    "hot dog", "cabbage", "broccoli", "cucumber", "bell pepper", "mushroom", "Granny Smith apple", "strawberry",
    "lemon", "pineapple", "banana", "pomegranate", "pizza", "burrito", "espresso", "volcano", "baseball player",
    "scuba diver", "acorn",
]

# CLIP's 18 CIFAR templates.
CIFAR_TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
]

# CLIP's 80 ImageNet templates.
IMAGENET_TEMPLATES = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.",
    "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "a tattoo of the {}.",
]

# CLIP's Food-101 template.
FOOD101_TEMPLATES = [
    "a photo of {}, a type of food.",
]

# CLIP's Oxford-Pets template.
OXFORD_PETS_TEMPLATES = [
    "a photo of a {}, a type of pet.",
]

# CLIP's Country-211 templates.
COUNTRY211_TEMPLATES = [
    "a photo i took in {}.", "a photo i took while visiting {}.", "a photo from my home country of {}.",
    "a photo from my visit to {}.", "a photo showing the country of {}.",
]
