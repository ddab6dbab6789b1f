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

# WordNet ids of IMAGENET_A's classes, same order (ImageNet-A's folder names).
IMAGENET_A_WNIDS = [
    "n01498041", "n01531178", "n01534433", "n01558993", "n01580077", "n01614925", "n01616318", "n01631663",
    "n01641577", "n01669191", "n01677366", "n01687978", "n01694178", "n01698640", "n01735189", "n01770081",
    "n01770393", "n01774750", "n01784675", "n01819313", "n01820546", "n01833805", "n01843383", "n01847000",
    "n01855672", "n01882714", "n01910747", "n01914609", "n01924916", "n01944390", "n01985128", "n01986214",
    "n02007558", "n02009912", "n02037110", "n02051845", "n02077923", "n02085620", "n02099601", "n02106550",
    "n02106662", "n02110958", "n02119022", "n02123394", "n02127052", "n02129165", "n02133161", "n02137549",
    "n02165456", "n02174001", "n02177972", "n02190166", "n02206856", "n02219486", "n02226429", "n02231487",
    "n02233338", "n02236044", "n02259212", "n02268443", "n02279972", "n02280649", "n02281787", "n02317335",
    "n02325366", "n02346627", "n02356798", "n02361337", "n02410509", "n02445715", "n02454379", "n02486410",
    "n02492035", "n02504458", "n02655020", "n02669723", "n02672831", "n02676566", "n02690373", "n02701002",
    "n02730930", "n02777292", "n02782093", "n02787622", "n02793495", "n02797295", "n02802426", "n02814860",
    "n02815834", "n02837789", "n02879718", "n02883205", "n02895154", "n02906734", "n02948072", "n02951358",
    "n02980441", "n02992211", "n02999410", "n03014705", "n03026506", "n03124043", "n03125729", "n03187595",
    "n03196217", "n03223299", "n03250847", "n03255030", "n03291819", "n03325584", "n03355925", "n03384352",
    "n03388043", "n03417042", "n03443371", "n03444034", "n03445924", "n03452741", "n03483316", "n03584829",
    "n03590841", "n03594945", "n03617480", "n03666591", "n03670208", "n03717622", "n03720891", "n03721384",
    "n03724870", "n03775071", "n03788195", "n03804744", "n03837869", "n03840681", "n03854065", "n03888257",
    "n03891332", "n03935335", "n03982430", "n04019541", "n04033901", "n04039381", "n04067472", "n04086273",
    "n04099969", "n04118538", "n04131690", "n04133789", "n04141076", "n04146614", "n04147183", "n04179913",
    "n04208210", "n04235860", "n04252077", "n04252225", "n04254120", "n04270147", "n04275548", "n04310018",
    "n04317175", "n04344873", "n04347754", "n04355338", "n04366367", "n04376876", "n04389033", "n04399382",
    "n04442312", "n04456115", "n04482393", "n04507155", "n04509417", "n04532670", "n04540053", "n04554684",
    "n04562935", "n04591713", "n04606251", "n07583066", "n07695742", "n07697313", "n07697537", "n07714990",
    "n07718472", "n07720875", "n07734744", "n07749582", "n07753592", "n07760859", "n07768694", "n07831146",
    "n09229709", "n09246464", "n09472597", "n09835506", "n11879895", "n12057211", "n12144580", "n12267677",
]

# WordNet ids of IMAGENET_R's classes, same order (ImageNet-R's folder names).
IMAGENET_R_WNIDS = [
    "n01443537", "n01484850", "n01494475", "n01498041", "n01514859", "n01518878", "n01531178", "n01534433",
    "n01614925", "n01616318", "n01630670", "n01632777", "n01644373", "n01677366", "n01694178", "n01748264",
    "n01770393", "n01774750", "n01784675", "n01806143", "n01820546", "n01833805", "n01843383", "n01847000",
    "n01855672", "n01860187", "n01882714", "n01910747", "n01944390", "n01983481", "n01986214", "n02007558",
    "n02009912", "n02051845", "n02056570", "n02066245", "n02071294", "n02077923", "n02085620", "n02086240",
    "n02088094", "n02088238", "n02088364", "n02088466", "n02091032", "n02091134", "n02092339", "n02094433",
    "n02096585", "n02097298", "n02098286", "n02099601", "n02099712", "n02102318", "n02106030", "n02106166",
    "n02106550", "n02106662", "n02108089", "n02108915", "n02109525", "n02110185", "n02110341", "n02110958",
    "n02112018", "n02112137", "n02113023", "n02113624", "n02113799", "n02114367", "n02117135", "n02119022",
    "n02123045", "n02128385", "n02128757", "n02129165", "n02129604", "n02130308", "n02134084", "n02138441",
    "n02165456", "n02190166", "n02206856", "n02219486", "n02226429", "n02233338", "n02236044", "n02268443",
    "n02279972", "n02317335", "n02325366", "n02346627", "n02356798", "n02363005", "n02364673", "n02391049",
    "n02395406", "n02398521", "n02410509", "n02423022", "n02437616", "n02445715", "n02447366", "n02480495",
    "n02480855", "n02481823", "n02483362", "n02486410", "n02510455", "n02526121", "n02607072", "n02655020",
    "n02672831", "n02701002", "n02749479", "n02769748", "n02793495", "n02797295", "n02802426", "n02808440",
    "n02814860", "n02823750", "n02841315", "n02843684", "n02883205", "n02906734", "n02909870", "n02939185",
    "n02948072", "n02950826", "n02951358", "n02966193", "n02980441", "n02992529", "n03124170", "n03272010",
    "n03345487", "n03372029", "n03424325", "n03452741", "n03467068", "n03481172", "n03494278", "n03495258",
    "n03498962", "n03594945", "n03602883", "n03630383", "n03649909", "n03676483", "n03710193", "n03773504",
    "n03775071", "n03888257", "n03930630", "n03947888", "n04086273", "n04118538", "n04133789", "n04141076",
    "n04146614", "n04147183", "n04192698", "n04254680", "n04266014", "n04275548", "n04310018", "n04325704",
    "n04347754", "n04389033", "n04409515", "n04465501", "n04487394", "n04522168", "n04536866", "n04552348",
    "n04591713", "n07614500", "n07693725", "n07695742", "n07697313", "n07697537", "n07714571", "n07714990",
    "n07718472", "n07720875", "n07734744", "n07742313", "n07745940", "n07749582", "n07753275", "n07753592",
    "n07768694", "n07873807", "n07880968", "n07920052", "n09472597", "n09835506", "n10565667", "n12267677",
]
