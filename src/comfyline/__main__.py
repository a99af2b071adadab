from comfyline.cli import main

main()
