from impala.cli import main

main()
